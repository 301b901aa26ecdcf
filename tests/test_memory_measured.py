"""The measured memory ledger (lora_core.quant.measure) against bytes computed by hand, on tiny models, and
against the estimator on real shapes; the gradient-checkpointing trap, run."""

import os
import sys
import time
from dataclasses import replace

import pytest
import torch
from conftest import tiny_gpt2
from torch import nn

import lora_core as lc
from lora_core.quant import checkpointing, measure, memory

F32, BF16 = 4, 2


def mlp(dtype: torch.dtype = torch.float32) -> nn.Module:
    """Linear(8, 16) → ReLU → Linear(16, 4), weights from a local generator."""
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model.to(dtype)


def inputs(*shape: int, dtype: torch.dtype = torch.float32, requires_grad: bool = False) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1)).to(dtype).requires_grad_(requires_grad)


MLP_PARAMS = 8 * 16 + 16 + 16 * 4 + 4   # 212 values in 4 tensors


@pytest.mark.parametrize("dtype,size", [(torch.float32, F32), (torch.bfloat16, BF16)])
def test_mlp_weights_grads_and_adamw_states_match_hand_counts(dtype, size):
    model, x = mlp(dtype), inputs(3, 8, dtype=dtype)
    m = measure.count_step(model, torch.optim.AdamW(model.parameters(), foreach=False), lambda: model(x).sum())
    assert m.weights == MLP_PARAMS * size
    assert m.gradients == MLP_PARAMS * size
    # torch's AdamW: exp_avg and exp_avg_sq are zeros_like(param), so a bf16 parameter gets bf16 moments,
    # plus one fp32 scalar `step` per parameter tensor.
    name = str(dtype).removeprefix("torch.")
    states = {name: 2 * MLP_PARAMS * size} if dtype != torch.float32 else {}
    states["float32"] = states.get("float32", 0) + (2 * MLP_PARAMS * F32 if dtype == torch.float32 else 0) + 4 * 4
    assert m.detail["optimizer states"] == states
    # Saved for backward: the input x (for the first weight's gradient) and ReLU's output (ReLU's own backward,
    # and the second weight's gradient: one storage, counted once). sum() saves nothing.
    assert m.activations == 3 * 8 * size + 3 * 16 * size
    assert m.counts["saved tensors"] == 2


def test_wide_adamw_keeps_fp32_moments_and_master_weights_for_bf16_params():
    for master, per_param in ((False, 8), (True, 12)):
        model, x = mlp(torch.bfloat16), inputs(3, 8, dtype=torch.bfloat16)
        opt = measure.WideAdamW(model.parameters(), master_weights=master)
        m = measure.count_step(model, opt, lambda model=model, x=x: model(x).sum())
        assert m.optimizer == MLP_PARAMS * per_param + 4 * 4     # + one fp32 step counter per tensor
        assert m.weights == MLP_PARAMS * BF16


def test_a_frozen_linear_saves_no_input():
    lin = nn.Linear(8, 16).requires_grad_(False)
    head = nn.Linear(16, 1)                # something trainable after it, so there is a backward pass
    model = nn.Sequential(lin, head)
    x = inputs(5, 8, requires_grad=True)   # x needs a gradient: the frozen Linear must still pass one back
    m = measure.count_step(model, torch.optim.SGD(head.parameters(), lr=0.1), lambda: model(x).sum())
    saved_by = {t.kind for t in m.saved}
    assert "Linear" in saved_by and all(t.shape != (5, 8) for t in m.saved)  # head saved its input, lin did not
    assert m.activations == 5 * 16 * F32


@pytest.mark.parametrize("path,tokens", [("plain", 6), ("addmm", 6), ("one-node", 64)])
def test_a_lora_wrapped_linear_saves_x_and_a_output(path, tokens):
    r, b = 4, 2
    base = nn.Linear(8, 16)
    model = nn.Sequential(base)
    lc.inject_lora(model, lc.LoraConfig(r=r, target_modules=["0"]), generator=torch.Generator().manual_seed(0))
    layer = model[0]
    layer.forward_path = path
    x = inputs(b, tokens, 8)
    params = [p for p in model.parameters() if p.requires_grad]
    m = measure.count_step(model, torch.optim.AdamW(params, foreach=False), lambda: model(x).sum())
    # x (for A's gradient) and A's output h = x Aᵀ, s·b·r (for B's gradient); the frozen W keeps nothing.
    assert m.activations == b * tokens * 8 * F32 + b * tokens * r * F32
    assert m.gradients == (8 * r + r * 16) * F32
    assert m.optimizer == 2 * (8 * r + r * 16) * F32 + 2 * 4


def test_tiny_gpt2_lora_counts_tied_embedding_once():
    model = tiny_gpt2()
    lc.inject_lora(model, lc.LoraConfig(r=2, target_modules=["c_attn"]), generator=torch.Generator().manual_seed(0))
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(2))
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    m = measure.count_step(model, torch.optim.AdamW(params, foreach=False),
                           lambda: model(input_ids=ids, labels=ids).loss)
    # wte 64·32 (lm_head is the same tensor) + wpe 32·32 + 2 blocks · (2 LayerNorms 2·64, c_attn 32·96+96,
    # c_proj 32·32+32, c_fc 32·128+128, mlp c_proj 128·32+32) + ln_f 64
    base = 64 * 32 + 32 * 32 + 2 * (128 + 3168 + 1056 + 4224 + 4128) + 64
    lora = 2 * (32 * 2 + 2 * 96)
    assert m.counts["unique parameters"] == base + lora == 28544 + 512
    assert m.detail["weights"] == {"frozen float32": base * F32, "trainable float32": lora * F32}
    assert m.gradients == lora * F32
    assert m.optimizer == 2 * lora * F32 + 4 * 4           # 4 LoRA tensors, one fp32 step each
    assert {t.via for t in m.saved} == {"autograd"}
    assert any(t.module.endswith("attn") for t in m.saved)  # each saved tensor is tagged with its module


@pytest.fixture(scope="module")
def distilgpt2_lora():
    cfg = memory.MemoryConfig(model="distilgpt2", method="lora", r=8, target_modules=["c_attn"], weight_dtype="fp32",
                              batch_size=1, seq_len=16)
    return cfg, measure.measure_step(cfg)


def test_distilgpt2_shapes_measured_weights_grads_states_equal_the_estimate(distilgpt2_lora):
    cfg, m = distilgpt2_lora
    est = memory.estimate_memory(cfg)
    assert m.weights == est.weights and m.gradients == est.gradients
    assert m.optimizer == est.optimizer + 4 * 12               # 12 LoRA tensors' step counters
    assert m.counts["trainable parameters"] == est.trainable_params == 6 * (768 * 8 + 8 * 2304)
    rows = {row["component"]: row for row in measure.compare(m, est)}
    assert rows["weights"]["ratio"] == 1.0 and rows["weights"]["explanation"] == ""
    for row in rows.values():   # every difference over 10% comes with its explanation
        assert bool(row["explanation"]) == (abs(row["ratio"] - 1) > 0.10)


def test_measured_logits_are_fp32_and_named_in_the_explanation():
    cfg = memory.MemoryConfig(model="distilgpt2", method="lora", r=8, target_modules=["c_attn"], weight_dtype="bf16",
                              batch_size=1, seq_len=16)
    m = measure.measure_step(cfg)
    top = m.saved[0]
    assert (top.dtype, top.shape, top.bytes) == ("float32", (16, 50257), 16 * 50257 * F32)
    fake = memory.estimate_memory(replace(cfg, seq_len=1024))  # far off on purpose
    why = next(r for r in measure.compare(m, fake) if r["component"] == "activations")["explanation"]
    assert "logits as fp32" in why and "50,257" in why


def test_qlora_constants_are_one_fp32_absmax_per_block():
    cfg = memory.MemoryConfig(model="distilgpt2", method="qlora", r=8, target_modules=["c_attn"], weight_dtype="bf16",
                              batch_size=1, seq_len=8, double_quant=False)
    m = measure.measure_step(cfg)
    q = m.counts["quantized weights"]
    assert q == memory.estimate_memory(cfg).quantized_params
    assert m.detail["quantization constants"]["absmax float32"] == q // 64 * F32
    assert m.detail["weights"]["frozen nf4 (packed uint8)"] == q // 2
    with_dq = memory.estimate_memory(replace(cfg, double_quant=True))
    row = next(r for r in measure.compare(m, with_dq) if r["component"] == "quantization constants")
    assert row["ratio"] > 3 and "does not double-quantize" in row["explanation"]


def test_checkpointing_keeps_each_block_input_and_saves_far_less():
    cfg = memory.MemoryConfig(model="distilgpt2", method="lora", r=8, target_modules=["c_attn"], weight_dtype="fp32",
                              batch_size=1, seq_len=16)
    off, on = checkpointing.checkpointing_saves(cfg)
    assert on["of which checkpoint inputs MB"] * 1e6 == 6 * 16 * 768 * F32   # one (b, s, h) input per block
    assert on["activations MB"] < off["activations MB"] / 2


def test_reentrant_checkpointing_without_input_grads_leaves_lora_b_untrained():
    cfg = memory.MemoryConfig(model="distilgpt2", method="lora", r=4, target_modules=["c_attn"], weight_dtype="fp32")
    rows = {row["setting"].split(" (")[0]: row for row in checkpointing.checkpoint_trap(cfg, seq_len=8, narrow=False)}
    trap = rows["reentrant checkpoint, embedding output frozen"]
    fixed = rows["reentrant checkpoint + enable_input_require_grads()"]
    assert (trap["lora_B with a gradient"], trap["lora_B grad norm"]) == ("0 of 6", 0.0)
    assert not trap["loss requires grad"]  # nothing trainable outside the checkpointed blocks: no grad_fn at all
    assert fixed["lora_B with a gradient"] == "6 of 6" and fixed["lora_B grad norm"] > 0
    assert fixed["embedding output requires grad"] and not trap["embedding output requires grad"]
    default = rows["transformers 5 default: activation_checkpointing_enable()"]
    assert default["checkpoint"] == "{'use_reentrant': False}" and default["lora_B with a gradient"] == "6 of 6"
    # The narrow copy (2 of the same blocks, width 64; the page's default) shows the same thing, row by row.
    narrow = checkpointing.checkpoint_trap(cfg, seq_len=8)
    assert [r["setting"].split(" (")[0] for r in narrow] == list(rows)
    for small, real in zip(narrow, rows.values(), strict=True):
        assert small["lora_B with a gradient"] == real["lora_B with a gradient"].replace("6", "2")
        for key in ("checkpoint", "embedding output requires grad", "loss requires grad"):
            assert small[key] == real[key]
        assert (small["lora_B grad norm"] > 0) == (real["lora_B grad norm"] > 0)


@pytest.mark.parametrize("model,blocks,targets", [("distilgpt2", 2, ["c_attn"]),
                                                  ("SmolLM2-135M", 2, ["q_proj", "v_proj"])])
def test_the_narrow_copy_keeps_the_blocks_and_module_names(model, blocks, targets):
    cfg = memory.MemoryConfig(model=model, method="qlora", r=2, target_modules=targets, weight_dtype="bf16")
    small = measure.build_model(cfg, narrow=True)
    real_names = {n for n, _ in lc.build_on_meta(model).named_modules()}
    assert {n for n, _ in small.named_modules() if "lora_" not in n and "base_layer" not in n} <= real_names
    assert small.config.num_hidden_layers == blocks and small.config.hidden_size == 64
    assert measure.narrow_description(model).startswith(f"a narrow {model}: {blocks} of its ")
    rows = checkpointing.checkpoint_trap(cfg)   # QLoRA on the narrow copy: the same trap
    assert rows[1]["lora_B with a gradient"] == f"0 of {blocks * len(targets)}"


@pytest.mark.parametrize("model", measure.MEASURABLE_MODELS)
def test_a_random_base_is_tied_finite_in_its_dtype_and_cheaper_than_drawing_its_weights(model):
    start = time.perf_counter()
    base = measure.random_base(model, "bf16")
    built = time.perf_counter() - start
    params = {p.data_ptr(): p for p in base.parameters()}.values()
    assert base.get_output_embeddings().weight is base.get_input_embeddings().weight  # tied, counted once
    assert all(p.dtype == torch.bfloat16 and torch.isfinite(p).all() and not p.requires_grad for p in params)
    matrices = [p for p in params if p.dim() == 2]
    assert all(0.015 < p.float().std() < 0.025 for p in matrices)
    for name, buf in base.named_buffers():  # RoPE's inv_freq is computed, not random: rebuilt exactly, in fp32
        fresh = dict(type(base.model.rotary_emb)(base.config).named_buffers())[name.rsplit(".", 1)[-1]]
        assert buf.dtype == torch.float32 and torch.equal(buf, fresh)
    start, gen = time.perf_counter(), torch.Generator().manual_seed(0)
    with torch.no_grad():   # what the base used to cost: one normal draw per weight
        for p in matrices:
            p.normal_(0.0, 0.02, generator=gen)
    assert built < time.perf_counter() - start


def test_measuring_never_seeds_the_process_nor_writes_a_cached_base(monkeypatch):
    # torch.utils.checkpoint itself forks the RNG (and fork_rng restores it) to replay dropout when it recomputes
    # a block (preserve_rng_state=True): torch's doing, in any checkpointed step. Our code never touches it.
    checkpoint, random = os.path.join("torch", "utils", "checkpoint.py"), os.path.join("torch", "random.py")
    allowed = {"fork_rng": (checkpoint,), "set_rng_state": (checkpoint, random)}

    def guard(module, name):
        original = getattr(module, name)

        def forbidden(*args, **kwargs):
            if name in allowed and sys._getframe(1).f_code.co_filename.endswith(allowed[name]):
                return original(*args, **kwargs)
            raise AssertionError(f"process-wide state touched: {module.__name__}.{name}")
        monkeypatch.setattr(module, name, forbidden)
    for module, name in ((torch, "manual_seed"), (torch.random, "manual_seed"), (torch, "seed"),
                         (torch, "set_rng_state"), (torch.random, "fork_rng"), (torch, "set_num_threads")):
        guard(module, name)
    cfg = memory.MemoryConfig(model="distilgpt2", method="qlora", r=2, target_modules=["c_attn"], weight_dtype="fp32",
                              batch_size=1, seq_len=8, double_quant=False)
    before = measure.build_model(cfg)   # a copy of the one cached NF4 base: its frozen weights share storage
    frozen = {n: p.detach().clone() for n, p in before.named_parameters() if not p.requires_grad}
    measure.measure_step(cfg)
    checkpointing.checkpoint_trap(cfg)
    after = dict(measure.build_model(cfg).named_parameters())
    for name, value in frozen.items():
        assert after[name].data_ptr() == dict(before.named_parameters())[name].data_ptr()
        assert torch.equal(after[name], value)


def test_bad_inputs_name_the_field():
    with pytest.raises(ValueError, match="model="):
        measure.build_model(memory.MemoryConfig(model="gpt2", method="lora", target_modules=["c_attn"]))
    with pytest.raises(ValueError, match="optimizer="):
        measure.make_optimizer(memory.MemoryConfig(model="distilgpt2", optimizer="adamw-8bit",
                                                   target_modules=["c_attn"]), [nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="method='full'"):
        measure.measure_step(memory.MemoryConfig(model="SmolLM2-135M", method="full"), max_estimated_bytes=2**30)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: torch.cuda.max_memory_allocated")
def test_cuda_peak_covers_the_counted_ledger():
    cfg = memory.MemoryConfig(model="distilgpt2", method="lora", r=8, target_modules=["c_attn"], batch_size=2,
                              seq_len=128)
    m = measure.measure_step(cfg, device="cuda")
    assert m.cuda_peak is not None and m.cuda_peak >= m.weights + m.activations
