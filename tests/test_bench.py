"""The speed benchmark runs end to end, the fused LoRA forward equals the plain formula (values and
gradients, fp64), and the all-layers spectrum equals the per-layer one. No timing is ever asserted."""

import copy
import json
import math

import pytest
import torch
import torch.nn as nn
from conftest import tiny_gpt2
from transformers import GPT2Config
from transformers.pytorch_utils import Conv1D

import lora_core as lc
from lora_core import bench, bench_report, step
from lora_core.layers import LoraLayer

TINY = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0)
QUICK = dict(batch=2, seq=8, repeats=2, warmup=1, threads=1)


def test_bench_runs_end_to_end_and_gives_the_json_keys():
    cfg = bench.BenchConfig(targets=("c_attn", "all-linear"), ranks=(8, 4), runs=2, **QUICK)
    result = json.loads(json.dumps(bench.run_benchmark(cfg, TINY)))  # JSON-ready as it is
    for key in ("ours_vs_frozen", "peft_vs_frozen", "ours_vs_peft", "full_vs_frozen", "cases", "device",
                "device_name", "dtype", "batch", "seq", "torch", "peak_memory", "ratios_per_run", "runs"):
        assert key in result, key
    assert (result["device"], result["dtype"], result["batch"], result["seq"]) == ("cpu", "fp32", 2, 8)
    assert result["torch"] == torch.__version__ and result["peak_memory"] is False
    names = [c["name"] for c in result["cases"]]
    assert names[0] == "frozen (floor)" and names[-1] == "full fine-tuning"
    assert len(names) == 2 + 2 * 2 * 2                     # floor, full, {ours, peft} × 2 targets × 2 ranks
    for key in ("ours_vs_frozen", "peft_vs_frozen", "ours_vs_peft"):
        assert len(result["ratios_per_run"][key]) == 2
        assert result[key] > 0 and math.isfinite(result[key])
    cases = {c["name"]: c for c in result["cases"]}
    assert cases["frozen (floor)"]["trainable"] == 0 and cases["frozen (floor)"]["vs_frozen"]["eager"] == 1.0
    for targets in ("c_attn", "all-linear"):
        for r in (8, 4):  # lora_core and PEFT train the same number of parameters
            assert cases[f"ours {targets} r={r}"]["trainable"] == cases[f"peft {targets} r={r}"]["trainable"] > 0
    full = cases["full fine-tuning"]
    assert full["trainable"] == sum(p.numel() for p in bench.random_model(TINY).parameters())
    assert full["state_bytes"] == 2 * 4 * full["trainable"]  # AdamW: two fp32 moments per weight
    assert all(len(c["ms_runs"]["eager"]) == 2 for c in result["cases"])
    table = bench.format_table(result)
    assert "vs floor" in table and "full fine-tuning" in table


def test_bench_command_line_prints_one_json_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", **TINY.to_diff_dict()}))
    bench.main(["--model", str(tmp_path), "--json", "--batch", "1", "--seq", "4", "--repeats", "1", "--warmup", "0",
                "--targets", "c_attn", "--ranks", "8", "--threads", "1", "--variants", "frozen", "ours"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    result = json.loads(out[0])
    assert [c["variant"] for c in result["cases"]] == ["frozen", "ours"]
    assert result["peft_vs_frozen"] is None and result["ours_vs_frozen"] > 0


def test_floor_really_runs_a_backward():
    floor = lc.shared_base_copy(bench.random_model(TINY))
    floor.get_input_embeddings().register_forward_hook(bench._require_grad_on_output)
    seen = []
    floor.get_input_embeddings().register_forward_hook(lambda m, i, o: seen.append(o))  # sees the hook's output
    step.train_step(floor, None, torch.zeros(1, 4, dtype=torch.long))
    assert seen[0].grad is not None and float(seen[0].grad.abs().sum()) > 0  # the backward reached the bottom
    assert all(p.grad is None for p in floor.parameters())                    # and no weight got a gradient


@pytest.mark.parametrize("bad", [dict(dtype="fp16"), dict(batch=0), dict(targets=("q_proj",)),
                                 dict(variants=("ours",)), dict(threads=0)])
def test_bench_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="is not allowed"):
        bench.BenchConfig(**bad)


def test_shipped_cpu_result_has_the_headline_keys():
    result = bench_report.shipped_result("cpu")
    assert result is not None and result["device"] == "cpu"
    assert {"ours_vs_frozen", "peft_vs_frozen", "ours_vs_peft", "cases"} <= result.keys()
    assert bench_report.shipped_result("no-such-machine") is None
    ref = {(r["case"], r["mode"]): r["vs_frozen"] for r in bench_report.reference_rows()}
    assert ref["frozen (floor)", "compiled"] == 1.0 and ref["full fine-tuning", "compiled"] == pytest.approx(12.7 / 7.3)


# --- the fast paths against the plain formula ----------------------------------------------------------------
PATHS = ["one-node", "addmm"]  # LoraLinear's default forward, and its fallback (base_layer(x) + add_lora)


@pytest.fixture(autouse=True)
def one_node_on_small_inputs(monkeypatch):
    """The one-node path starts at 64 tokens (where it pays); these tests use a few, so lower the bar."""
    monkeypatch.setattr(lc.layers, "ONE_NODE_MIN_TOKENS", 1)


def _pair(base: nn.Module, path: str = "one-node", dtype=torch.float64, train_weight: bool = False, **kw):
    """The same LoRA layer twice: one on the fast `path`, one forced onto the plain formula."""
    torch.manual_seed(0)
    fast = lc.LoraLinear(base.to(dtype), lc.LoraConfig(r=3, lora_alpha=5, init_lora_weights=False, **kw))
    fast.base_layer.bias.requires_grad_(True)  # a trainable bias (bias="all") must get its gradient too
    fast.base_layer.weight.requires_grad_(train_weight)
    plain = copy.deepcopy(fast)
    plain.forward_path, fast.forward_path = "plain", path
    return fast, plain


def _outputs_and_grads(layer: LoraLayer, x: torch.Tensor, seed: int = 1):
    x = x.detach().clone().requires_grad_(True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same dropout mask for both layers
        y = layer(x)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
    w = layer.base_layer.weight
    return y.detach(), x.grad, layer.lora_A.weight.grad, layer.lora_B.weight.grad, layer.base_layer.bias.grad, w.grad


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("make", [lambda: nn.Linear(7, 5), lambda: Conv1D(5, 7)], ids=["linear", "conv1d"])
@pytest.mark.parametrize("shape", [(7,), (4, 7), (2, 3, 7)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_fast_paths_equal_the_plain_formula_with_gradients_fp64(path, make, shape, p):
    fast, plain = _pair(make(), path, lora_dropout=p, train_weight=shape == (4, 7))
    assert fast.scaling == 5 / 3  # not a power of two: a misplaced scale would show
    x = torch.randn(*shape, dtype=torch.float64)
    got, want = _outputs_and_grads(fast, x), _outputs_and_grads(plain, x)
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g is None
        else:
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_the_one_node_path_is_taken_and_saves_nothing_out_wide():
    fast, _ = _pair(Conv1D(40, 7))
    x = torch.randn(16, 7, dtype=torch.float64, requires_grad=True)
    y = fast(x)
    assert type(y.grad_fn).__name__ == "FusedLoraLinearBackward"
    saved = [t for t in y.grad_fn.saved_tensors if t is not None]
    assert all(t.shape[-1] != 40 or t is fast.base_layer.weight for t in saved)  # x, h, W, A, B: no (N, out)
    fast.train()
    fast.lora_dropout = nn.Dropout(0.5)  # dropout: the node also gets the dropped input
    assert type(fast(x).grad_fn).__name__ == "FusedLoraLinearBackward"
    fast.base_layer.register_forward_hook(lambda m, i, o: None)  # a hook on the base: it must be called
    assert type(fast(x).grad_fn).__name__ != "FusedLoraLinearBackward"


def test_the_one_node_path_waits_for_enough_tokens(monkeypatch):
    monkeypatch.setattr(lc.layers, "ONE_NODE_MIN_TOKENS", 64)
    fast, _ = _pair(Conv1D(5, 7))
    x = torch.randn(2, 31, 7, dtype=torch.float64, requires_grad=True)  # 62 tokens: below the crossover
    assert type(fast(x).grad_fn).__name__ != "FusedLoraLinearBackward"
    x = torch.randn(2, 32, 7, dtype=torch.float64, requires_grad=True)
    assert type(fast(x).grad_fn).__name__ == "FusedLoraLinearBackward"


@pytest.mark.parametrize("path", PATHS)
def test_fast_paths_pass_gradcheck(path):
    fast, _ = _pair(Conv1D(5, 7), path)
    A, B, bias = fast.lora_A.weight, fast.lora_B.weight, fast.base_layer.bias
    x = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, A, B, bias: fast(x), (x, A, B, bias))


@pytest.mark.parametrize("path", PATHS)
def test_fast_paths_with_a_bf16_base_add_in_fp32_like_the_plain_formula(path):
    fast, plain = _pair(nn.Linear(16, 12), path, dtype=torch.bfloat16)
    assert fast.lora_A.weight.dtype == torch.float32  # factors train in fp32, as in PEFT
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    got, want = _outputs_and_grads(fast, x), _outputs_and_grads(plain, x)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.bfloat16
    for g, w in zip(got[:5], want[:5], strict=True):
        torch.testing.assert_close(g, w)


def test_forward_path_is_checked():
    layer, _ = _pair(nn.Linear(7, 5))
    with pytest.raises(ValueError, match="forward_path='fast' is not allowed"):
        layer.forward_path = "fast"
    assert layer.forward_path == "one-node"


def test_a_hook_on_lora_b_still_sees_its_call():
    fast, plain = _pair(nn.Linear(7, 5))
    calls = []
    fast.lora_B.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    x = torch.randn(4, 7, dtype=torch.float64)
    torch.testing.assert_close(fast(x), plain(x))
    assert calls == [(4, 5)]
    other, _ = _pair(nn.Linear(7, 5))  # fast by default, no hook of its own
    seen = []                           # a global module hook must see its lora_B called too
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(m))
    try:
        other(x)
    finally:
        handle.remove()
    assert any(m is other.lora_B for m in seen)


def test_fused_model_matches_peft_in_training_mode(tokens):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from peft.utils import set_peft_model_state_dict

    kw = dict(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    ours = tiny_gpt2()
    lc.inject_lora(ours, lc.LoraConfig(**kw))
    theirs = get_peft_model(tiny_gpt2(), PeftLoraConfig(fan_in_fan_out=True, **kw))
    set_peft_model_state_dict(theirs, lc.adapter_state_dict(ours))
    ours.train()
    theirs.train()
    for model in (ours, theirs):
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    loss_ours, loss_theirs = ours(tokens, labels=tokens).loss, theirs(tokens, labels=tokens).loss
    loss_ours.backward()
    loss_theirs.backward()
    torch.testing.assert_close(loss_ours, loss_theirs)
    theirs_grads = {n.removeprefix("base_model.model.").replace(".default", ""): p.grad
                    for n, p in theirs.named_parameters() if p.requires_grad}
    for name, p in ours.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, theirs_grads[name], rtol=1e-5, atol=1e-6)


# --- the spectrum of every layer at once -------------------------------------------------------------------
def test_all_singular_values_equal_the_per_layer_ones():
    model = tiny_gpt2()
    lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    every = lc.spectrum.all_singular_values(model)
    layers = lc.lora_layers(model)
    assert list(every) == [n for n, _ in layers] and len(every) == 8
    for name, layer in layers:
        torch.testing.assert_close(every[name], lc.singular_values(layer))
        full = torch.linalg.svdvals(layer.delta_weight().detach().double())[:4]
        torch.testing.assert_close(every[name].double(), full, rtol=1e-4, atol=1e-6)


# --- CUDA graphs: GPU only ----------------------------------------------------------------------------------
def test_cuda_graph_step_refuses_cpu_tensors():
    model = bench.random_model(TINY)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        step.cuda_graph_step(model, opt, torch.zeros(1, 4, dtype=torch.long))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_step_trains_like_the_eager_step():
    cfg = GPT2Config(**{**TINY.to_dict(), "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0})
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0)).cuda()
    models = []
    for _ in range(2):
        model = bench.random_model(cfg, "cuda")
        torch.manual_seed(1)  # the same random factors in both
        lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False))
        models.append(model)
    eager, graphed = models
    opt_eager = torch.optim.AdamW([p for p in eager.parameters() if p.requires_grad], lr=1e-2, capturable=True)
    opt_graph = torch.optim.AdamW([p for p in graphed.parameters() if p.requires_grad], lr=1e-2, capturable=True)
    replay = step.cuda_graph_step(graphed, opt_graph, ids, warmup=3)  # 3 real steps, then capture
    for _ in range(3):
        replay()
    for _ in range(6):
        step.train_step(eager, opt_eager, ids)
    torch.cuda.synchronize()
    for (name, p), q in zip(eager.named_parameters(), graphed.parameters(), strict=True):
        if p.requires_grad:
            torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)


def test_the_floor_is_the_fastest_frozen_step_and_peft_is_timed_eager():
    def case(name, variant, targets=None, r=None, **ms_runs):
        c = bench.Case(name, variant, targets, r)
        c.ms_runs = ms_runs
        c.ms = {m: sorted(v)[len(v) // 2] for m, v in ms_runs.items()}
        return c

    cases = [case("frozen (floor)", "frozen", eager=[100.0, 110.0], compiled=[80.0, 90.0]),
             case("ours c_attn r=8", "ours", "c_attn", 8, eager=[101.0, 111.0], compiled=[82.0, 90.0]),
             case("peft c_attn r=8", "peft", "c_attn", 8, eager=[120.0, 132.0], compiled=[81.0, 91.0]),
             case("full fine-tuning", "full", eager=[160.0, 176.0])]
    headline, floor_mode, ours_mode = bench_report.floor_ratios(cases, runs=2)
    assert (floor_mode, ours_mode) == ("compiled", "compiled")
    assert headline["ours_vs_frozen"] == pytest.approx([82 / 80, 90 / 90])        # against the compiled floor
    assert headline["peft_vs_frozen"] == pytest.approx([120 / 80, 132 / 90])      # PEFT eager, as users run it
    assert headline["ours_vs_peft"] == pytest.approx([82 / 120, 90 / 132])
    assert headline["ours_eager_vs_frozen_eager"] == pytest.approx([101 / 100, 111 / 110])
    assert cases[3].vs_floor["eager"] == pytest.approx((160 / 80 + 176 / 90) / 2)  # median of two runs
    assert cases[1].vs_frozen["compiled"] == pytest.approx((82 / 80 + 1.0) / 2)    # same-mode ratio kept too


def test_markdown_table_has_one_row_per_case(tmp_path, capsys):
    result = bench_report.shipped_result("cpu")
    table = bench_report.markdown_table(result).splitlines()
    assert table[0].startswith("| case | trainable | eager ms | eager × floor")
    assert len(table) == 2 + len(result["cases"])
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    assert bench.main(["--markdown", str(path)]) == 0
    assert capsys.readouterr().out.strip().splitlines() == table


@pytest.mark.slow
def test_a_compiled_lora_model_matches_eager_losses_and_gradients():
    """torch.compile traces LoraLinear's plain formula (its compiler fuses it): same loss and gradients."""
    models = []
    for _ in range(2):
        model = bench.random_model(TINY).eval()  # no dropout: the two runs would draw different masks
        torch.manual_seed(1)                      # the same non-zero A and B in both
        lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
        models.append(model)
    eager, compiled = models
    ids = torch.randint(0, TINY.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    loss_eager = eager(input_ids=ids, labels=ids).loss
    loss_compiled = torch.compile(compiled)(input_ids=ids, labels=ids).loss
    loss_eager.backward()
    loss_compiled.backward()
    torch.testing.assert_close(loss_compiled, loss_eager, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        if p.requires_grad:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
