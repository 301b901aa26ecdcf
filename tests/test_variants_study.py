"""The Variants study (lora_core.research.variants): ΔM and ΔD by hand, the weight each variant computes with, the
verdict's rule, the Trainer's LoRA+ and LoRA-FA options, and the whole study end to end on a tiny Llama with GPT-2's
vocabulary (two steps per run), written and read back as the page reads it. SmolLM2 itself is not trained here: the
`--quick` study on it is a few minutes, the full one far longer (the command is in the module's docstring).
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from conftest import GPT2_TOKENS, tiny_gpt2, tiny_llama

import lora_core as lc
from lora_core.research import record, variants, verdicts
from lora_core.research.e2e import make_task
from lora_core.research.variants_runs import (
    Scale,
    Study,
    VariantSpec,
    effective_weight,
    fit,
    magnitude_direction,
    out_in,
)
from lora_core.training.data import Dataset, load_dataset
from lora_core.training.trainer import TrainConfig, Trainer, lr_at

VOCAB = dict(**GPT2_TOKENS, initializer_range=0.2, pad_token_id=50256)  # as test_train.py: GPT-2's tokenizer fits
TINY = Scale("quick", steps=2, checkpoint_every=1, noise_seeds=2, timing_repeats=1, batch_size=2, n_loss=4)


def llama() -> torch.nn.Module:
    return tiny_llama(max_position_embeddings=64, **VOCAB).requires_grad_(False)


def gpt2() -> torch.nn.Module:
    return tiny_gpt2(n_positions=64, **VOCAB).requires_grad_(False)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny matmuls on one thread


@pytest.fixture(scope="module")
def tok():
    return lc.models.gpt2_tokenizer()


def tiny_study(tok, base=None, log=None) -> Study:
    return Study(base if base is not None else llama(), tok, make_task(0, n_train=32, n_test=8), TINY, log=log)


@pytest.fixture(scope="module")
def result(tok, tmp_path_factory):
    """The whole study on the tiny Llama, written and read back; its base, to check it was never written."""
    study = tiny_study(tok)
    before = copy.deepcopy(study.base.state_dict())
    out = tmp_path_factory.mktemp("variants")
    path = record.write(variants.run_study(study, ["run", "--quick", "--out", str(out)]), out)
    return record.load(path), before, study.base


# --- the decomposition by hand ---------------------------------------------------------------------------------------
def test_scaling_rows_moves_magnitude_only_and_rotating_them_direction_only():
    w0 = torch.tensor([[3.0, 4.0], [1.0, 0.0]])                   # row norms 5 and 1
    dm, dd = magnitude_direction(w0, w0 * torch.tensor([[2.0], [3.0]]))
    assert dm == pytest.approx((5 + 2) / 2) and dd == pytest.approx(0.0, abs=1e-12)
    turn = torch.tensor([[0.0, -1.0], [1.0, 0.0]])                 # 90°: cos 0 for every row
    dm, dd = magnitude_direction(w0, w0 @ turn.T)
    assert dm == pytest.approx(0.0, abs=1e-12) and dd == pytest.approx(1.0)


def test_fit_reads_a_line_and_refuses_too_few_or_flat_points():
    points = [{"dD": x, "dM": 3 * x + 1} for x in (0.1, 0.2, 0.4)]
    f = fit(points)
    assert f["slope"] == pytest.approx(3) and f["intercept"] == pytest.approx(1)
    assert f["correlation"] == pytest.approx(1)
    assert fit(points[:2])["correlation"] is None
    assert fit([{"dD": 0.1, "dM": m} for m in (1, 2, 3)])["slope"] is None


@pytest.mark.parametrize("build", [llama, gpt2], ids=["linear", "conv1d"])
@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_the_effective_weight_is_the_merged_weight(build, kind):
    """LoRA's W + ΔW and DoRA's m (W + ΔW) / ‖W + ΔW‖, as (out, in), equal the weight merge_lora writes."""
    model = build()
    lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=8, target_modules=None, use_dora=kind == "dora"),
                   generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in lc.lora_layers(model):
            a = layer.adapter()
            a.B.normal_(0, 0.1, generator=gen)
            if a.magnitude is not None:
                a.magnitude.mul_(1.3)
    ours = {name: effective_weight(layer) for name, layer in lc.lora_layers(model)}
    lc.merge_lora(model)
    for name, layer in lc.lora_layers(model):
        torch.testing.assert_close(ours[name], out_in(layer.base_layer).float(), rtol=1e-5, atol=1e-6)


# --- the verdict's rule ----------------------------------------------------------------------------------------------
def _with(correlations: dict, n: int = 100) -> dict:
    fits = {m: {"q_proj": {"correlation": r, "n": n}} for m, r in correlations.items()}
    return {"results": {"decomposition": {"headline": "q_proj", "fits": fits}}}


@pytest.mark.parametrize("correlations, word", [
    ({"full": -0.6, "lora": 0.8, "dora": -0.3}, verdicts.HELD),
    ({"full": -0.1, "lora": 0.8, "dora": -0.3}, verdicts.SMALLER),     # full's sign within the ±0.2 band
    ({"full": 0.5, "lora": 0.9, "dora": 0.6}, verdicts.SMALLER),      # no sign right, but LoRA clearly above both
    ({"full": 0.7, "lora": 0.8, "dora": 0.9}, verdicts.NOT_HELD),
    ({"full": None, "lora": 0.8, "dora": -0.3}, verdicts.NOT_HELD),
])
def test_the_verdict_follows_its_stated_rule(correlations, word):
    v = variants.verdict(_with(correlations))
    assert v["verdict"] == word and "2/√n" in v["rule"] and "-0.62" in v["ours"]


# --- the Trainer's optimizer option --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    full = load_dataset("recommendations")
    return Dataset("small", full.train[::9], full.test[:4])


def adapted(r: int = 4) -> torch.nn.Module:
    model = gpt2()
    lc.inject_lora(model, lc.LoraConfig(r=r, lora_alpha=8, target_modules=["c_attn"]),
                   generator=torch.Generator().manual_seed(0))
    return model


def test_loraplus_gives_b_sixteen_times_a_s_rate_at_every_step_of_the_schedule(tok, data):
    cfg = TrainConfig(lr=1e-3, steps=4, batch_size=4, optimizer="loraplus", loraplus_lr_ratio=16)
    trainer = Trainer(adapted(), tok, data, cfg)
    for step in range(4):
        trainer.step()
        groups = {g: pg["lr"] for g, pg in zip(lc.optimizers.LORAPLUS_GROUPS, trainer.optimizer.param_groups,
                                                strict=True)}
        assert groups["groupA"] == pytest.approx(lr_at(cfg, step))
        assert groups["groupB"] == pytest.approx(16 * lr_at(cfg, step))


def test_the_default_optimizer_is_plain_adamw_with_one_group(tok, data):
    trainer = Trainer(adapted(), tok, data, TrainConfig(lr=1e-3, steps=2, batch_size=4))
    assert type(trainer.optimizer) is torch.optim.AdamW and len(trainer.optimizer.param_groups) == 1
    trainer.step()
    assert trainer.optimizer.param_groups[0]["lr"] == lr_at(trainer.cfg, 0)  # exactly the schedule, as before


def test_lorafa_trains_b_alone_and_leaves_a_where_it_started(tok, data):
    model = adapted()
    A0 = {n: layer.adapter().A.detach().clone() for n, layer in lc.lora_layers(model)}
    trainer = Trainer(model, tok, data, TrainConfig(lr=1e-2, steps=3, batch_size=4, optimizer="lorafa"))
    assert isinstance(trainer.optimizer, lc.LoraFAOptimizer)
    assert all(".lora_B." in n for n in trainer.names)
    trainer.run(3)
    for name, layer in lc.lora_layers(model):
        assert torch.equal(layer.adapter().A, A0[name])
        assert layer.adapter().B.abs().max() > 0


def test_a_bad_optimizer_is_refused_and_a_refused_trainer_leaves_the_model_as_it_was(tok, data):
    with pytest.raises(ValueError, match="optimizer='sgd' is not allowed"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="loraplus_lr_ratio=0 is not allowed"):
        TrainConfig(loraplus_lr_ratio=0)
    with pytest.raises(ValueError, match="full_finetune=True"):
        Trainer(gpt2().requires_grad_(True), tok, data, TrainConfig(optimizer="lorafa"), full_finetune=True)
    model = adapted()
    with pytest.raises(ValueError, match="seq_len=128"):
        Trainer(model, tok, data, TrainConfig(seq_len=128, optimizer="lorafa"))
    assert all(layer.adapter().A.requires_grad for _, layer in lc.lora_layers(model))  # A not frozen by a refusal


# --- the study end to end --------------------------------------------------------------------------------------------
def test_the_study_writes_strict_json_with_provenance_and_a_verdict(result):
    res, _, _ = result
    assert res["name"] == "variants" and res["scale"] == "quick" and res["seeds"] == [0, 1]
    assert res["command"].startswith("python -m lora_core.research.variants run --quick --out ")
    json.dumps(res, allow_nan=False)
    v = variants.verdict(res)
    assert v["verdict"] in verdicts.VERDICTS and res["results"]["verdict"] == v


def test_every_matrix_is_measured_at_every_checkpoint_for_each_method(result):
    part = result[0]["results"]["decomposition"]
    assert part["methods"] == ["full", "lora", "dora"] and part["headline"] == "q_proj"
    for m in part["methods"]:
        points = part["runs"][m]["points"]
        assert len(points) == 2 * 2 * TINY.steps                      # q and v of 2 layers, every step
        assert all(p["dM"] >= 0 and p["dD"] >= 0 for p in points)
        assert {p["proj"] for p in points} == {"q_proj", "v_proj"}
        assert part["fits"][m]["all"]["n"] == len(points)
    assert part["runs"]["full"]["trainable"] > 100 * part["runs"]["lora"]["trainable"]


def test_each_variant_trains_what_it_should(result):
    res = result[0]["results"]
    lora = res["decomposition"]["runs"]["lora"]["trainable"]
    dora = res["decomposition"]["runs"]["dora"]["trainable"]
    assert dora - lora == 2 * (32 + 16)                                # one magnitude per output feature of q and v
    by_label = {row["label"]: row for row in res["optimizers"]["rows"]}
    fa = by_label[VariantSpec("lorafa", variants.LORA_LR).label]
    assert fa["trainable"] == 2 * 8 * (32 + 16)                        # B only: (out, r) of q and v in 2 layers
    assert lora == fa["trainable"] + 2 * 2 * 8 * 32                    # plus every A, (r, in)
    assert len(res["optimizers"]["rows"]) == len(variants.LORAPLUS_LRS) + len(variants.LORAFA_LRS)
    assert all(math.isfinite(row["final_loss"]) for row in res["optimizers"]["rows"] + res["inits"]["rows"])


def test_every_init_starts_at_the_base_model(result):
    step0 = {s["method"]: s for s in result[0]["results"]["inits"]["step0"]}
    assert set(step0) == {"lora", "olora", "pissa"}
    assert step0["lora"]["mean_delta_norm"] == 0 and step0["lora"]["max_logit_change"] == 0
    for m in ("olora", "pissa"):
        assert step0[m]["max_logit_change"] < 1e-4 and step0[m]["max_start_error"] < 1e-5
        assert step0[m]["mean_delta_norm"] > 0.1                       # a real ΔW, taken out of W
        assert step0[m]["mean_taken_from_w"] == pytest.approx(step0[m]["mean_delta_norm"], rel=1e-4)


def test_the_cost_is_measured_for_every_variant_against_lora(result):
    cost = result[0]["results"]["cost"]
    rows = {r["method"]: r for r in cost["rows"]}
    assert set(rows) == {"lora", "dora", "loraplus", "lorafa", "olora", "pissa", "full"}
    assert rows["lora"]["vs_lora"] == 1.0 and all(r["ms"] > 0 for r in rows.values())
    assert rows["lorafa"]["activations_bytes"] < rows["lora"]["activations_bytes"]  # no x kept for A's gradient
    assert rows["lorafa"]["optimizer_bytes"] < rows["lora"]["optimizer_bytes"]
    assert rows["full"]["gradients_bytes"] > 100 * rows["lora"]["gradients_bytes"]
    assert "measured in this study" in cost["source"]


def test_the_study_never_writes_the_shared_base(result):
    _, before, base = result
    after = base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_lora_seeds_give_the_yardstick(result):
    res = result[0]["results"]
    spread = res["lora_seeds"]["final_loss"]
    assert spread["n"] == 2 and spread["std"] >= 0
    readings = {row["reading"] for row in res["optimizers"]["rows"] + res["inits"]["rows"]}
    assert readings <= {"within LoRA's seed noise", "lower than LoRA beyond seed noise",
                        "higher than LoRA beyond seed noise"}


# --- the command line, the reader and the live check -----------------------------------------------------------------
def test_the_command_line_writes_the_result_with_its_own_command(tok, tmp_path, monkeypatch):
    lines = []
    monkeypatch.setattr(variants, "QUICK", Scale("quick", steps=1, checkpoint_every=1, noise_seeds=1,
                                                 timing_repeats=1, batch_size=2, n_loss=2))

    def open_study(scale, device, log):
        return Study(llama(), tok, make_task(0, n_train=16, n_test=8), scale, device=device, log=log)

    assert variants.main(["run", "--quick", "--out", str(tmp_path)], log=lines.append, open_study=open_study) == 0
    res = record.load(tmp_path / "variants.json")
    assert res["command"] == f"python -m lora_core.research.variants run --quick --out {tmp_path}"
    assert res["settings"]["steps"] == 1 and any("DoRA's Figure 2 here" in line for line in lines)


def test_an_unknown_command_is_refused_before_anything_loads(capsys):
    with pytest.raises(SystemExit):
        variants.main(["train"], open_study=lambda *a, **k: pytest.fail("nothing should load"))
    assert "invalid choice: 'train'" in capsys.readouterr().err


def test_without_a_shipped_study_the_reader_says_none_and_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(variants, "RESULTS_DIR", tmp_path)
    assert variants.shipped() is None
    assert variants.study_command() == f"python -m lora_core.research.variants run --out {tmp_path}"


def test_the_benchmark_rows_are_read_only_for_adapters_other_than_plain_lora(tmp_path):
    path = tmp_path / "cpu_variants.json"
    assert variants.bench_variant_rows(path) is None
    case = {"name": "ours c_attn r=8", "variant": "ours", "adapter": "lora", "ms": {"eager": 10.0}}
    path.write_text(json.dumps({"cases": [case], "provenance": {"command": "python -m lora_core.bench"}}))
    assert variants.bench_variant_rows(path) is None
    dora = {**case, "name": "ours dora c_attn r=8", "adapter": "dora", "ms": {"eager": 12.0}, "saved_bytes": 5}
    path.write_text(json.dumps({"cases": [case, dora], "provenance": {"command": "python -m lora_core.bench"}}))
    bench = variants.bench_variant_rows(path)
    assert [r["case"] for r in bench["rows"]] == ["ours dora c_attn r=8"]
    assert bench["command"] == "python -m lora_core.bench"


def test_the_live_check_measures_each_step_and_touches_no_global_state(tok):
    base = gpt2()
    kept, rng = copy.deepcopy(base.state_dict()), torch.get_rng_state()
    live = variants.live_check(base, tok, "pissa", steps=2)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in kept.items())
    assert live["matrices"] == 2 and len(live["run"]["points"]) == 2 * 2   # c_attn of 2 blocks, after each step
    assert live["step0"]["max_logit_change"] < 1e-4 and live["fits"]["all"]["n"] == 4


@pytest.mark.parametrize("kw, message", [(dict(method="full"), "method='full' is not allowed"),
                                         (dict(method="lora", steps=0), "steps=0 is not allowed"),
                                         (dict(method="lora", steps=True), "steps=True is not allowed")])
def test_the_live_check_refuses_bad_input(tok, kw, message):
    with pytest.raises(ValueError, match=message):
        variants.live_check(gpt2(), tok, **kw)
