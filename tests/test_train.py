"""The Trainer on tiny GPT-2 / Llama models: learning, label masking, exact resume, divergence, evaluation."""

import dataclasses
import itertools
import math
import threading

import pytest
import torch
from conftest import GPT2_TOKENS, tiny_gpt2, tiny_llama

import lora_core as lc
from lora_core.training.data import IGNORE_INDEX, Dataset, collate, encode_pair, load_dataset
from lora_core.training.metrics import bleu, completion_loss, generate, perplexity
from lora_core.training.trainer import TrainConfig, Trainer, TrainingDiverged, delta_norm, lr_at

EOS = 50256  # GPT-2's <|endoftext|>, also its pad token


# The tiny models read GPT-2's real vocabulary. With the usual init (std 0.02) their frozen output
# layer gives near-uniform logits that a small adapter can hardly move; std 0.2 gives it a grip.
GPT2_VOCAB = dict(**GPT2_TOKENS, initializer_range=0.2, pad_token_id=EOS)


def gpt2_64() -> torch.nn.Module:
    """conftest's tiny GPT-2, 64 wide and 64 positions; dropout stays at GPT-2's 0.1, so the RNG handling is
    exercised."""
    return tiny_gpt2(n_embd=64, n_positions=64, **GPT2_VOCAB)


def llama_64() -> torch.nn.Module:
    """conftest's tiny Llama, 64 wide (MLP 128) and 64 positions."""
    return tiny_llama(hidden_size=64, intermediate_size=128, max_position_embeddings=64, **GPT2_VOCAB)


BUILDERS = {"gpt2": gpt2_64, "llama": llama_64}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny matmuls on one thread


@pytest.fixture(scope="module")
def tok():
    return lc.models.gpt2_tokenizer()


@pytest.fixture(scope="module")
def data():
    full = load_dataset("recommendations")
    return Dataset("small", full.train[::9], full.test[:6])


def adapted(arch: str = "gpt2", targets="all-linear", dropout: float = 0.1, init=True):
    model = BUILDERS[arch]()
    torch.manual_seed(1)  # as before: test_grad_accumulation's atol=1e-6 holds for these factors, not every draw
    lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                        lora_dropout=dropout, init_lora_weights=init))
    return model


def adapter(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# --- learning ------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_loss_falls_over_30_steps(arch, tok, data):
    trainer = Trainer(adapted(arch), tok, data, TrainConfig(lr=3e-2, steps=30, batch_size=8, warmup_steps=3))
    losses = [m["loss"] for m in trainer.run(30)]
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:3]) / 3
    assert trainer.evaluate("test")["loss"] < completion_loss(BUILDERS[arch](), tok, data.test)[0]


def test_only_the_adapter_changes(tok, data):
    model = adapted("llama", targets=["q_proj", "v_proj"])
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    Trainer(model, tok, data, TrainConfig(lr=1e-2, steps=3)).run(3)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)


def test_full_finetune_trains_every_weight_without_an_adapter(tok, data):
    """The research replays' baseline: full_finetune=True trains the model's own weights (no LoRA needed)."""
    model = BUILDERS["llama"]()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="no LoRA adapter"):
        Trainer(model, tok, data, TrainConfig(lr=1e-3, steps=3))
    trainer = Trainer(model, tok, data, TrainConfig(lr=1e-3, steps=3), full_finetune=True)
    trainer.run(3)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before) and trainer.step_count == 3


def test_metrics_of_a_step(tok, data):
    trainer = Trainer(adapted(), tok, data, TrainConfig(lr=1e-2, steps=10, warmup_steps=2))
    m = trainer.step()
    assert set(m) >= {"step", "loss", "lr", "grad_norm", "tokens_per_s", "delta_norm", "tokens", "seconds"}
    assert m["step"] == 1 and m["lr"] == pytest.approx(5e-3) and m["tokens_per_s"] > 0
    assert m["delta_norm"] == pytest.approx(delta_norm(trainer.model)) and m["delta_norm"] > 0
    assert not trainer.model.training  # step() leaves the model in eval mode


def test_delta_norm_is_the_mean_frobenius_norm_of_delta_w():
    model = adapted(init=False)  # non-zero B, so the check means something
    norms = [torch.linalg.matrix_norm(layer.delta_weight()).item() for _, layer in lc.lora_layers(model)]
    assert delta_norm(model) == pytest.approx(sum(norms) / len(norms), rel=1e-4)


def test_lr_warms_up_then_decays_to_min_ratio():
    cfg = TrainConfig(lr=1.0, steps=10, warmup_steps=2, min_lr_ratio=0.1)
    lrs = [lr_at(cfg, s) for s in range(12)]
    assert lrs[:3] == [0.5, 1.0, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(lrs[2:]))
    assert lrs[10] == pytest.approx(0.1) and lrs[11] == pytest.approx(0.1)


def test_grad_accumulation_matches_one_big_batch(tok, data):
    runs = []
    for bs, accum in ((8, 1), (4, 2)):
        model = adapted(dropout=0.0)
        model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.0
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        trainer = Trainer(model, tok, data, TrainConfig(lr=1e-2, steps=2, batch_size=bs, grad_accum=accum))
        runs.append(([m["loss"] for m in trainer.run(2)], adapter(model)))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-5)
    assert all(torch.allclose(runs[0][1][n], runs[1][1][n], atol=1e-6) for n in runs[0][1])


def test_callback_every_log_every_and_stop(tok, data):
    seen = []
    trainer = Trainer(adapted(), tok, data, TrainConfig(lr=1e-3, steps=10, log_every=2))
    assert len(trainer.run(5, callback=seen.append)) == 5
    assert [m["step"] for m in seen] == [2, 4, 5]  # every 2nd, and the last
    assert len(trainer.run(5, callback=lambda m: False)) == 1


# --- masking -------------------------------------------------------------------------------------
def test_labels_are_ignored_exactly_on_prompt_and_padding(tok):
    pairs = [("User likes chess videos.", "I recommend 'Endgame Basics'"), ("Hi.", "I recommend 'A'")]
    encoded = [encode_pair(tok, p, c, 64) for p, c in pairs]
    batch = collate(encoded, tok.pad_token_id)
    for row, (prompt, completion) in enumerate(pairs):
        n_prompt = len(tok(prompt)["input_ids"])
        completion_ids = tok(" " + completion)["input_ids"] + [EOS]
        n = n_prompt + len(completion_ids)
        labels, ids, mask = batch["labels"][row], batch["input_ids"][row], batch["attention_mask"][row]
        assert (labels[:n_prompt] == IGNORE_INDEX).all()                # prompt
        assert labels[n_prompt:n].tolist() == completion_ids             # completion + EOS, learned
        assert (labels[n:] == IGNORE_INDEX).all() and (ids[n:] == EOS).all()  # padding (pad id == EOS id)
        assert mask.tolist() == [1] * n + [0] * (len(mask) - n)
        assert tok.decode(ids[:n]) == f"{prompt} {completion}<|endoftext|>"
    assert (batch["labels"] == IGNORE_INDEX).sum() == sum(len(tok(p)["input_ids"]) for p, _ in pairs) + (
        batch["input_ids"].numel() - batch["attention_mask"].sum())


def test_seq_len_cuts_on_the_right_and_too_short_is_refused(tok, data):
    ids, labels = encode_pair(tok, "User likes chess videos.", "I recommend 'Endgame Basics'", 7)
    assert len(ids) == len(labels) == 7 and labels[5:] != [IGNORE_INDEX] * 2
    with pytest.raises(ValueError, match="seq_len=4 leaves no completion token"):
        Trainer(adapted(), tok, data, TrainConfig(seq_len=4))


# --- reproducibility and resume ------------------------------------------------------------------
def test_same_seed_same_losses_other_seed_other_losses(tok, data):
    def losses(seed):
        return [m["loss"] for m in Trainer(adapted(), tok, data, TrainConfig(lr=1e-2, seed=seed)).run(4)]
    assert losses(0) == losses(0)
    assert losses(0) != losses(1)


def test_pause_and_resume_continue_exactly(tok, data):
    cfg = TrainConfig(lr=1e-2, steps=8, batch_size=4, warmup_steps=2)
    straight = Trainer(adapted(), tok, data, cfg)
    expected = [m["loss"] for m in straight.run(8)]

    paused = Trainer(adapted(), tok, data, cfg)
    first = [m["loss"] for m in paused.run(4)]
    torch.randn(1000)                                  # other code uses the global RNG meanwhile,
    paused.generate(["User likes chess videos."], 4)   # generates,
    paused.evaluate("test")                            # evaluates
    saved = paused.state_dict()
    assert first + [m["loss"] for m in paused.run(4)] == expected

    fresh = Trainer(adapted(), tok, data, cfg)         # a new Trainer on a new model, from the saved state
    fresh.load_state_dict(saved)
    assert [m["loss"] for m in fresh.run(4)] == expected[4:]
    assert all(torch.equal(p, adapter(straight.model)[n]) for n, p in adapter(fresh.model).items())


def test_building_a_trainer_touches_no_global_rng_and_a_step_gives_it_back(tok, data, monkeypatch):
    model = adapted()
    state = torch.get_rng_state()

    def refuse(*_, **__):
        raise AssertionError("a Trainer being built must not set torch's global generator")

    with monkeypatch.context() as m:
        for name in ("manual_seed", "set_rng_state", "seed"):
            m.setattr(torch, name, refuse)
        m.setattr(torch.random, "fork_rng", refuse)
        trainer = Trainer(model, tok, data, TrainConfig(lr=1e-2, seed=3))
    assert torch.equal(torch.get_rng_state(), state)
    trainer.run(2)                                              # dropout draws from the Trainer's stream ...
    assert torch.equal(torch.get_rng_state(), state)            # ... and the caller's state comes back


def test_two_trainers_on_two_threads_keep_their_own_dropout_streams(tok, data):
    cfg = TrainConfig(lr=1e-2, steps=4, batch_size=4)
    alone = {seed: [m["loss"] for m in Trainer(adapted(), tok, data, dataclasses.replace(cfg, seed=seed)).run(4)]
             for seed in (0, 1)}
    trainers = {seed: Trainer(adapted(), tok, data, dataclasses.replace(cfg, seed=seed)) for seed in (0, 1)}
    together: dict[int, list[float]] = {}
    threads = [threading.Thread(target=lambda s=seed: together.__setitem__(s, [m["loss"] for m in trainers[s].run(4)]))
               for seed in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone                                    # two learners never share a dropout mask


def test_state_from_another_config_is_refused(tok, data):
    saved = Trainer(adapted(), tok, data, TrainConfig(lr=1e-2)).state_dict()
    with pytest.raises(ValueError, match="different TrainConfig"):
        Trainer(adapted(), tok, data, TrainConfig(lr=2e-2)).load_state_dict(saved)


# --- divergence ----------------------------------------------------------------------------------
def test_injected_inf_stops_training_and_restores_the_last_good_adapter(tok, data):
    trainer = Trainer(adapted(), tok, data, TrainConfig(lr=1e-2, steps=10))
    trainer.run(2)
    good = adapter(trainer.model)      # the weights step 3 starts from; its loss will be finite
    trainer.step()
    hook = trainer.model.lm_head.register_forward_hook(lambda mod, inp, out: out * math.inf)
    with pytest.raises(TrainingDiverged, match=r"the loss became (nan|inf) at step 4"):
        trainer.step()
    hook.remove()
    assert all(torch.equal(p, good[n]) for n, p in adapter(trainer.model).items())
    assert all(p.grad is None for p in trainer.params)
    with pytest.raises(TrainingDiverged, match="has diverged"):
        trainer.step()


def test_huge_lr_diverges_and_leaves_finite_weights(tok, data):
    # lr=1e6 overflows GPT-2's attention by step 3. (The tiny Llama does not NaN at 1e6: RMSNorm
    # rescales whatever the adapter adds and the loss just sticks at ln(vocab); divergence is not always NaN.)
    trainer = Trainer(adapted("gpt2", dropout=0.0), tok, data,
                      TrainConfig(lr=1e6, steps=20, warmup_steps=0, max_grad_norm=None))
    with pytest.raises(TrainingDiverged, match=r"became nan at step 3 .* weights step 2 ran with"):
        trainer.run(20)
    assert trainer.step_count == 2
    assert all(torch.isfinite(p).all() for p in trainer.params)
    assert math.isfinite(trainer.evaluate("test")["loss"])


# --- evaluation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_generate_is_greedy_deterministic_and_batch_independent(arch, tok):
    model = adapted(arch, init=False)
    prompts = ["User likes chess videos.", "Hi.", "User enjoys videos about astronomy today."]
    batched = generate(model, tok, prompts, max_new_tokens=6)
    assert batched == generate(model, tok, prompts, max_new_tokens=6)
    assert batched == [generate(model, tok, [p], max_new_tokens=6)[0] for p in prompts]
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        generate(model, tok, prompts, max_new_tokens=0)


def test_generate_refuses_a_prompt_longer_than_the_model_reads(tok):
    model = tiny_gpt2(vocab_size=len(tok))                      # n_positions=32
    with pytest.raises(ValueError, match=r"prompt has 30 tokens: this model reads at most 32 positions, so with "
                                         r"max_new_tokens=8 a prompt may have at most 24 tokens"):
        generate(model, tok, [("tell me more " * 10).strip()], max_new_tokens=8)
    assert len(generate(model, tok, [("tell me more " * 8).strip()], max_new_tokens=8)) == 1  # 24 + 8 = 32


def test_evaluate_reports_loss_and_bleu(tok, data):
    trainer = Trainer(adapted(), tok, data, TrainConfig())
    out = trainer.evaluate("test", bleu=True, limit=3, max_new_tokens=4)
    assert out["pairs"] == 3 and len(out["predictions"]) == 3 and 0.0 <= out["bleu"] <= 100.0
    assert out["loss"] == pytest.approx(completion_loss(trainer.model, tok, data.test[:3])[0])


def test_bleu_is_sacrebleu_corpus_bleu_on_0_to_100():
    refs = ["I recommend 'Pasta Tutorial'", "I recommend 'Endgame Basics'"]
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert bleu(["nothing alike", "at all"], refs) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="same length"):
        bleu(refs, refs[:1])


def test_perplexity_is_exp_of_the_mean_token_loss(tok):
    model = gpt2_64()
    text = "The water cycle moves water from the sea to the sky and back again."
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
    assert perplexity(model, tok, text) == pytest.approx(math.exp(loss), rel=1e-5)
    # blocks longer than the model's 64 positions are cut to fit
    assert math.isfinite(perplexity(model, tok, " ".join([text] * 10), block_size=1000))


# --- bad input -----------------------------------------------------------------------------------
BAD_VALUES = [
    ("lr", 0), ("lr", -1e-3), ("lr", float("nan")), ("steps", 0), ("steps", 2.5), ("batch_size", True),
    ("seq_len", 1), ("warmup_steps", -1), ("warmup_steps", 50), ("weight_decay", -0.1),
    ("grad_accum", 0), ("max_grad_norm", 0.0), ("seed", -1), ("device", 3), ("log_every", 0),
    ("min_lr_ratio", 1.5),
]


@pytest.mark.parametrize("field, value", BAD_VALUES, ids=[f"{field}={value!r}" for field, value in BAD_VALUES])
def test_train_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"{field}="):
        TrainConfig(**{field: value})


def test_trainer_rejects_bad_setups(tok, data):
    with pytest.raises(ValueError, match="no LoRA adapter"):
        Trainer(gpt2_64(), tok, data)
    with pytest.raises(ValueError, match=r"seq_len=128 .* at most 64 positions"):
        Trainer(adapted(), tok, data, TrainConfig(seq_len=128))
    with pytest.raises(ValueError, match="empty train split"):
        Trainer(adapted(), tok, Dataset("none", [], []))
    with pytest.raises(ValueError, match=r"split='test' .* is empty"):
        Trainer(adapted(), tok, Dataset("x", data.train, [])).evaluate("test")
