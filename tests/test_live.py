"""LiveRun (the Fine-tuning page's engine), merge_report and the zipped adapter, on tiny models."""

import io
import zipfile

import pytest
import torch
from conftest import tiny_gpt2
from peft import PeftModel

import lora_core as lc
from lora_core import training
from lora_core.teach import merge_check
from lora_core.training.live import LiveRun


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls run fastest on one thread; the rest of the suite gets its thread count back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def setup():
    tok = lc.models.gpt2_tokenizer()
    # std 0.02 barely trains in a few steps; a larger init learns visibly
    model = tiny_gpt2(vocab_size=len(tok), initializer_range=0.2)
    data = training.Dataset.from_pairs([(f"User likes topic {i}.", f"I recommend 'Video {i % 5}'") for i in range(40)])
    return model, tok, data


def _start(setup, **kw):
    model, tok, data = setup
    cfg = lc.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"])
    train = training.TrainConfig(lr=kw.pop("lr", 1e-2), steps=kw.pop("steps", 6), batch_size=4, seq_len=24)
    return LiveRun.start(model, tok, data, cfg, train, eval_limit=4, probe_every=2, **kw)


def test_a_run_trains_a_private_copy_and_measures_before_and_after(setup):
    base = setup[0]
    snapshot = {n: p.detach().clone() for n, p in base.named_parameters()}
    run = _start(setup)
    assert run.before["bleu"] >= 0 and "ppl_general" in run.before and run.probes[0]["step"] == 0
    while run.status == "running":
        run.advance(seconds=0.05)
    assert run.status == "done" and run.step == 6 and run.after
    assert run.history[-1]["loss"] < run.history[0]["loss"]
    assert [p["step"] for p in run.probes] == [0, 2, 4, 6]
    assert all(torch.equal(p, snapshot[n]) for n, p in base.named_parameters())   # the base is untouched
    assert not lc.lora_layers(base)


def test_pause_and_resume_continue_the_same_run(setup):
    straight = _start(setup)
    while straight.status == "running":
        straight.advance(seconds=0.0)
    paused = _start(setup)
    paused.advance(seconds=0.0)
    paused.pause()
    assert paused.advance() == [] and paused.status == "paused"
    torch.randn(100)  # other code using the global RNG must not change the run
    paused.resume()
    while paused.status == "running":
        paused.advance(seconds=0.0)
    assert [h["loss"] for h in paused.history] == [h["loss"] for h in straight.history]


def test_stop_keeps_the_adapter_and_divergence_is_reported(setup):
    run = _start(setup)
    run.advance(seconds=0.0)
    run.finish("stopped")
    assert run.status == "stopped" and run.after and run.step == 1
    wild = _start(setup, steps=20)
    wild.advance(seconds=0.0)
    _, layer = lc.lora_layers(wild.model)[0]
    with torch.no_grad():
        layer.lora_B.weight.fill_(float("inf"))  # what a runaway learning rate ends in
    while wild.status == "running":
        wild.advance(seconds=0.0)
    assert wild.status == "diverged" and "restored" in wild.message and wild.step == 1
    assert torch.isfinite(layer.lora_B.weight).all()                 # the last good adapter is back


def test_merge_report_and_zip_export_round_trip_through_peft(setup, tmp_path):
    run = _start(setup)
    while run.status == "running":
        run.advance(seconds=0.0)
    rep = merge_check.merge_report(run.model, run.tokenizer, run.sample_prompts, max_new_tokens=4, repeats=1)
    assert rep["max_abs_dlogit"] < 1e-4 and rep["same_generations"]
    assert not any(layer.merged for _, layer in lc.lora_layers(run.model))   # left as it was
    rows = lc.spectrum.adapter_report(run.model)
    assert len(rows) == 2 and all(0 < row["relative"] < 10 for row in rows)
    zipfile.ZipFile(io.BytesIO(lc.adapter_zip(run.model))).extractall(tmp_path)
    base = setup[0]
    theirs = PeftModel.from_pretrained(base, tmp_path).eval()
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, run.model(ids).logits, rtol=1e-5, atol=1e-5)


def test_a_run_never_moves_the_global_rng_and_its_seed_fixes_the_adapter(setup):
    def adapter(run):
        return {n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad}

    state = torch.get_rng_state()
    one, two, other = _start(setup, seed=7), _start(setup, seed=7), _start(setup, seed=8)
    for run in (one, two, other):
        run.advance(seconds=0.0)                                   # a training step, dropout included
    assert torch.equal(torch.get_rng_state(), state)               # start, probes and steps: none moved it
    a, b, c = adapter(one), adapter(two), adapter(other)
    assert all(torch.equal(t, b[n]) for n, t in a.items())         # same seed, same adapter
    assert any(not torch.equal(t, c[n]) for n, t in a.items())


def test_a_diverged_run_is_measured_like_a_stopped_one():
    tok = lc.models.gpt2_tokenizer()
    model = tiny_gpt2(vocab_size=len(tok))                       # the usual std 0.02 init
    data = training.Dataset.from_pairs([(f"User likes topic {i}.", f"I recommend 'Video {i % 5}'") for i in range(20)])
    run = LiveRun.start(model, tok, data, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]),
                        training.TrainConfig(steps=6, batch_size=4, seq_len=24), eval_limit=2, probe_every=2)
    run.advance(seconds=0.0)
    _, layer = lc.lora_layers(run.model)[0]
    with torch.no_grad():
        layer.lora_B.weight.fill_(float("inf"))                  # what a runaway learning rate ends in
    run.advance(seconds=0.0)
    assert run.status == "diverged" and "restored" in run.message
    assert {"ppl_general", "bleu", "heldout_loss"} <= set(run.after)  # the page's results section needs these
    assert torch.isfinite(layer.lora_B.weight).all()
