"""lora_core on CUDA: the same answers as on the CPU and as PEFT on the GPU. Each test skips without CUDA.

`make gpu-check` runs these (pytest -m gpu) on a GPU machine with its own torch, transformers and PEFT. The models
are built on the CPU from the oracle tests' builders, then moved; what is compared on the GPU is the GPU's output.
`LORA_GPU_TEST_DEVICE=cpu` runs the same tests on the CPU: the check's rehearsal (`gpu_check --rehearse`) does.
"""

import os

import pytest
import torch
from conftest import GPT2_TOKENS, tiny_gpt2, tiny_llama
from test_mixed_batch import NAMES, each_row_alone, plain, two_adapters
from test_peft_oracle import CASES, build_pair
from test_peft_oracle_dora import CASES as DORA_CASES
from test_peft_oracle_dora import build_pair as build_dora_pair

import lora_core as lc
from lora_core.bench import gpu_parts
from lora_core.quant.nf4 import NF4Linear, quantize_model

CUDA = torch.device(os.environ.get("LORA_GPU_TEST_DEVICE", "cuda"))
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(), reason="needs CUDA")]
TOKENS = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(7))
ORACLE = ("gpt2-c_attn-r4", "gpt2-all_linear", "gpt2-c_attn-embedding", "llama-all_linear-r8-bias_all",
          "llama-qkvo-saved_lm_head")
DORA = ("gpt2-attn_mlp-rslora-bias_all", "llama-all_linear-bias_all")


def logits(model, tokens=TOKENS):
    with torch.no_grad():
        out = model(tokens.to(next(model.parameters()).device))
    return out.logits.float().cpu()


@pytest.fixture(autouse=True)
def exact_matmuls():
    """fp32 matmuls in fp32 (no TF32), whatever the machine's default, for the length of one test."""
    if CUDA.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("case", ORACLE)
def test_logits_and_merge_equal_peft_on_cuda(case):
    make, kw = CASES[case]
    ours, theirs = build_pair(make, kw)
    ours, theirs = ours.to(CUDA).eval(), theirs.to(CUDA).eval()
    torch.testing.assert_close(logits(ours), logits(theirs), rtol=1e-5, atol=1e-5)
    cpu = logits(ours.cpu())
    torch.testing.assert_close(logits(ours.to(CUDA)), cpu, rtol=1e-4, atol=1e-4)  # the GPU agrees with the CPU
    if "embedding" in case:  # a tied embedding: PEFT's merge also changes lm_head (pinned in test_peft_oracle)
        return
    lc.merge_lora(ours)
    theirs.merge_adapter()
    torch.testing.assert_close(logits(ours), logits(theirs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", DORA)
def test_dora_equals_peft_on_cuda_in_fp32_and_under_bf16_autocast(case):
    make, kw = DORA_CASES[case]
    ours, theirs = build_dora_pair(make, kw)
    ours, theirs = ours.to(CUDA), theirs.to(CUDA)
    torch.testing.assert_close(logits(ours), logits(theirs), rtol=1e-5, atol=1e-5)
    with torch.autocast(CUDA.type, dtype=torch.bfloat16):
        a, b = logits(ours), logits(theirs)
    torch.testing.assert_close(a, b, rtol=3e-2, atol=3e-2)  # bf16 products: the same math, rounded alike


def test_a_training_step_gives_peft_s_gradients_on_cuda():
    ours, theirs = build_pair(*CASES["llama-all_linear-r8-bias_all"])
    ours, theirs = ours.to(CUDA).train(), theirs.to(CUDA).train()
    ids = TOKENS.to(CUDA)
    for model in (ours, theirs):
        model(input_ids=ids, labels=ids).loss.backward()
    theirs_grads = {n.removeprefix("base_model.model."): p.grad for n, p in theirs.named_parameters()
                    if p.requires_grad}
    ours_grads = {n: p.grad for n, p in ours.named_parameters() if p.requires_grad}
    assert ours_grads.keys() == theirs_grads.keys()
    for name, grad in ours_grads.items():
        torch.testing.assert_close(grad, theirs_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_mixed_batch_on_cuda_equals_peft_and_each_row_alone():
    ours, theirs = two_adapters("gpt2")
    ours, theirs = ours.to(CUDA), theirs.to(CUDA)
    tokens = TOKENS[:, :12].repeat(2, 1)[: len(NAMES)].to(CUDA)
    with lc.mixed_batch(ours, NAMES):
        mixed = logits(ours, tokens)
    with torch.no_grad():
        peft_mixed = theirs(tokens, adapter_names=NAMES).logits.float().cpu()
    torch.testing.assert_close(mixed, peft_mixed, rtol=1e-5, atol=1e-5)
    for i, row in enumerate(each_row_alone(plain(ours), tokens, NAMES)):
        torch.testing.assert_close(mixed[i], row.float().cpu(), rtol=1e-5, atol=1e-5, msg=str(i))


def test_nf4_on_cuda_stores_the_cpu_s_codes_and_trains():
    base = tiny_llama()
    gpu = quantize_model(base.to(CUDA))
    cpu = quantize_model(base.cpu())
    for (name, a), (_, b) in zip(gpu.named_modules(), cpu.named_modules(), strict=True):
        if isinstance(a, NF4Linear):
            assert torch.equal(a.packed.cpu(), b.packed) and torch.equal(a.absmax.cpu(), b.absmax), name
    lc.inject_lora(gpu, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
                   generator=torch.Generator().manual_seed(0))
    lc.inject_lora(cpu, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
                   generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits(gpu), logits(cpu), rtol=1e-4, atol=1e-4)
    ids = TOKENS.to(CUDA)
    gpu.train()(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for p in gpu.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_nf4_check_part_agrees_with_its_reference_on_cuda():
    result = gpu_parts.nf4_check(CUDA, shapes=((192, 128), (128, 320)), repeats=2)
    assert result["ok"], result


def test_a_compiled_lora_model_gives_the_eager_logits_and_trains():
    make, kw = CASES["gpt2-all_linear"]
    ours, _ = build_pair(make, kw)
    ours = ours.to(CUDA).eval()
    eager = logits(ours)
    compiled = torch.compile(ours)
    torch.testing.assert_close(logits(compiled), eager, rtol=1e-4, atol=1e-4)
    ids = TOKENS.to(CUDA)
    loss = compiled.train()(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in ours.parameters() if p.requires_grad)


def test_the_trainer_on_cuda_is_reproducible_and_leaves_the_global_rng_alone():
    from lora_core.models.sources import gpt2_tokenizer
    from lora_core.training.data import load_dataset
    from lora_core.training.trainer import TrainConfig, Trainer

    def run():
        model = tiny_gpt2(**GPT2_TOKENS)
        lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.1),
                       generator=torch.Generator().manual_seed(0))
        model.to(CUDA)
        trainer = Trainer(model, gpt2_tokenizer(), load_dataset("recommendations"),
                          TrainConfig(steps=4, batch_size=4, seq_len=32, device=CUDA.type))
        return [m["loss"] for m in trainer.run(4)]

    rng_state = torch.cuda.get_rng_state if CUDA.type == "cuda" else torch.get_rng_state
    before = rng_state()
    first, second = run(), run()
    assert torch.equal(rng_state(), before)
    assert all(torch.isfinite(torch.tensor(first)))
    assert first == pytest.approx(second, rel=1e-4)
