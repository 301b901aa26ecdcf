"""LoRA fine-tuning on 2 CPU processes (gloo on 127.0.0.1): equal to one process on the same global batch.

One torchrun launch of tests/dist_worker.py trains every case; each test reads what it wrote. The launch is bounded
in time, and so is each process group (a hung collective fails the test instead of the suite).
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from dist_worker import build, small_data

import lora_core as lc
from lora_core.training.distributed import check_backend, check_merge, local_launcher, save_adapter_atomically
from lora_core.training.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
TRAIN = {"batch_size": 2, "seq_len": 48, "lr": 0.01, "steps": 3}
# every target set the app offers, on both architectures, with the trainable extras DDP must also reduce:
# biases (bias="all"), DoRA's magnitude, a modules_to_save copy, and gradient accumulation (no_sync between)
CASES = [
    {"arch": "gpt2", "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn"]},  # clipping always on
     "train": {**TRAIN, "max_grad_norm": 1e-3}, "steps": 3},
    {"arch": "gpt2", "lora": {"r": 4, "lora_alpha": 8, "target_modules": "all-linear", "bias": "all"},
     "train": {**TRAIN, "grad_accum": 2}, "steps": 2},
    {"arch": "gpt2", "lora": {"r": 2, "lora_alpha": 4, "target_modules": ["c_attn"], "use_dora": True},
     "train": TRAIN, "steps": 2},
    {"arch": "llama", "lora": {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}, "train": TRAIN, "steps": 2},
    {"arch": "llama", "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
                               "modules_to_save": ["lm_head"]}, "train": TRAIN, "steps": 2},
    # FSDP (FSDP2's fully_shard, gloo on CPU): every weight sharded, the same adapter; clipping on DTensors, LoRA+
    {"arch": "llama", "lora": {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"},
     "train": {**TRAIN, "max_grad_norm": 1e-3}, "steps": 2, "strategy": "fsdp"},
    {"arch": "llama", "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
     "train": {**TRAIN, "optimizer": "loraplus"}, "steps": 2, "strategy": "fsdp"},
    {"arch": "gpt2", "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn"]},
     "train": {**TRAIN, "grad_accum": 2}, "steps": 2, "strategy": "fsdp"},
]
FSDP = [i for i, case in enumerate(CASES) if case.get("strategy") == "fsdp"]
# a learning rate that blows the loss up: both processes must stop at the same step (none left waiting)
DIVERGING = {"arch": "gpt2", "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn"], "init_lora_weights":
                                      False}, "train": {**TRAIN, "lr": 1e6, "max_grad_norm": None}, "steps": 3}


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Every case trained once on 2 processes: (folder, seconds the launch took)."""
    import time

    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
           "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    worker = [str(ROOT / "tests" / "dist_worker.py"), str(out), json.dumps([*CASES, DIVERGING])]
    done = subprocess.run([*local_launcher(2), *worker], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return out, time.perf_counter() - t0


def ranks(folder: Path) -> list[dict]:
    return [json.loads((folder / f"rank{k}.json").read_text()) for k in (0, 1)]


def single_process(case: dict) -> tuple[torch.nn.Module, list[float]]:
    """The reference: one process, one Trainer, batch_size doubled (the 2-process global batch)."""
    model = build(case["arch"], case["lora"])
    train = {**case["train"], "batch_size": 2 * case["train"]["batch_size"]}
    trainer = Trainer(model, lc.models.gpt2_tokenizer(), small_data(), TrainConfig(**train))
    return model, [m["loss"] for m in trainer.run(case["steps"])]


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(CASES)))
def test_two_processes_train_the_adapter_one_process_trains_on_the_whole_batch(launched, i):
    folder = launched[0] / str(i)
    r0, r1 = ranks(folder)
    assert r0["world"] == r1["world"] == 2
    assert r0["losses"] == r1["losses"]  # every process logs the same all-reduced loss
    assert r0["base_unchanged"] and r1["base_unchanged"]  # the frozen base is bit-for-bit the same on both ranks
    reference, losses = single_process(CASES[i])
    assert r0["losses"] == pytest.approx(losses, rel=1e-5)
    trained = lc.load_adapter(build(CASES[i]["arch"], CASES[i]["lora"]), folder)
    ref, got = reference.state_dict(), trained.state_dict()
    moved = [n for n, p in reference.named_parameters() if p.requires_grad]
    assert moved
    worst = max(_differs(n, got[n], ref[n]) for n in moved)
    assert worst < 1e-5, worst  # fp32 rounding of a padded slice against the whole batch, through 2-3 Adam steps


def _differs(name: str, got: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest |got - ref|, leaving out GPT-2's key bias (the middle third of c_attn's bias): adding b_k to every
    key adds the same q·b_k to each score, which softmax ignores, so its true gradient is 0. What autograd
    returns is rounding noise near 1e-9, and Adam (eps 1e-8) turns noise into steps near lr: two runs that
    round differently move it differently. Every other parameter must agree."""
    diff = (got - ref).abs()
    if name.endswith("attn.c_attn.base_layer.bias"):
        third = diff.numel() // 3
        diff = torch.cat([diff[:third], diff[2 * third:]])
    return diff.max().item()


@pytest.mark.slow
def test_only_the_trainable_gradients_cross_the_wire(launched):
    for i, case in enumerate(CASES):
        if i in FSDP:
            continue  # FSDP has no communication hook to count with
        r0, r1 = ranks(launched[0] / str(i))
        per_step = 4 * r0["trainable"]  # fp32 gradients of what requires grad: nothing of the frozen base
        assert r0["wire_bytes"] == r1["wire_bytes"] == per_step * case["steps"]
        # (the byte count also catches an all-reduce per micro-batch: case 1 accumulates 2 of them per step)


@pytest.mark.slow
def test_the_saved_2_process_adapter_loads_in_peft_with_equal_logits(launched):
    from peft import PeftModel

    for i in (0, 3, *FSDP):
        case, folder = CASES[i], launched[0] / str(i)
        ours = lc.load_adapter(_base(case), folder)
        theirs = PeftModel.from_pretrained(_base(case), str(folder)).eval()
        ids = torch.randint(0, 50257, (2, 12), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.allclose(ours.eval()(ids).logits, theirs(input_ids=ids).logits, atol=1e-5)
    for i in range(len(CASES)):  # one save per case, nothing left over beside it
        assert sorted(p.name for p in launched[0].joinpath(str(i)).iterdir()) == [
            "adapter_config.json", "adapter_model.safetensors", "rank0.json", "rank1.json"]
    assert sorted(p.name for p in launched[0].iterdir()) == [str(i) for i in range(len(CASES) + 1)]


def _base(case: dict) -> torch.nn.Module:
    """The tiny base without its adapter (the same seed as dist_worker.build)."""
    from conftest import tiny_gpt2, tiny_llama
    from dist_worker import VOCAB

    if case["arch"] == "gpt2":
        return tiny_gpt2(n_embd=64, n_positions=64, dropout=0.0, **VOCAB)
    return tiny_llama(hidden_size=64, intermediate_size=128, max_position_embeddings=64, **VOCAB)


def test_bad_setups_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="backend='mpi' is not allowed"):
        check_backend("mpi", "cpu")
    with pytest.raises(ValueError, match="backend='nccl' is not allowed with device='cpu'"):
        check_backend("nccl", "cpu")
    assert check_backend(None, "cpu") == "gloo" and check_backend(None, "cuda") == "nccl"
    for kind in ("FSDP", "DEEPSPEED"):
        with pytest.raises(ValueError, match=f"merge=True is not allowed under {kind}"):
            check_merge(kind)
    check_merge("DDP")
    model = build("gpt2", CASES[0]["lora"])
    out = save_adapter_atomically(model, tmp_path / "a")
    (out / "metrics.json").write_text("{}")  # a past run's results, and a file of the user's own
    (out / "merged").mkdir()
    (out / "notes.txt").write_text("mine")
    again = save_adapter_atomically(model, out)  # the folder swapped whole: the past run's results go
    assert again == out and sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "notes.txt"]


def torchrun_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([*local_launcher(2), "-m", "lora_core.finetune", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_finetune_cli_under_torchrun_writes_once_from_rank_0(tmp_path):
    out = tmp_path / "ddp"
    done = torchrun_cli("--model", "distilgpt2-random", "--rank", "8", "--alpha", "16", "--targets", "c_attn",
                        "--steps", "2", "--batch-size", "2", "--seq-len", "32", "--eval-limit", "2",
                        "--max-new-tokens", "2", "--samples", "1", "--merge", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("wrote ") == 1 and "2 processes" in done.stderr  # rank 0 alone reports
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["global_batch"] == 4 and metrics["steps"] == 2
    assert metrics["allreduced_bytes_per_step"] == 4 * 147_456  # distilgpt2's c_attn at r = 8: 0.59 MB
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "merged",
                                                     "metrics.json"]
    assert (out / "merged" / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_bad_backend_stops_every_process_with_its_name(tmp_path):
    done = torchrun_cli("--model", "distilgpt2-random", "--backend", "mpi", "--out", str(tmp_path / "x"), timeout=120)
    assert done.returncode != 0 and "backend='mpi' is not allowed" in done.stderr
    assert not (tmp_path / "x").exists()
    pairs = tmp_path / "three.jsonl"  # 3 examples cannot fill one global batch of 2 processes x 2
    pairs.write_text("".join(json.dumps({"prompt": f"User likes {t}.", "completion": f"I recommend '{t}'"}) + "\n"
                             for t in ("jazz", "chess", "maps")))
    done = torchrun_cli("--model", "distilgpt2-random", "--data", str(pairs), "--batch-size", "2",
                        "--out", str(tmp_path / "y"), timeout=120)
    assert done.returncode != 0 and "world_size=2 is not allowed with batch_size=2" in done.stderr


def test_the_shipped_bytes_on_the_wire_are_the_trainable_gradients():
    """results/distributed/wire.json (python -m lora_core.bench.wire): every case sent 4 bytes per trainable
    parameter per step, as counted on distilgpt2's shapes here, and nothing of the frozen base."""
    from lora_core.bench import run, wire

    result = wire.shipped()
    rows = {r["case"]: r for r in result["rows"]}
    model = run.random_model("distilgpt2")
    total = sum(p.numel() for p in model.parameters())
    counts = {"full fine-tuning": total}
    for name, (targets, r) in ((n, s) for n, s in wire.CASES if s is not None):
        counts[name] = lc.count_lora_parameters("distilgpt2", lc.LoraConfig(r=r, target_modules=targets)).trainable
    assert set(rows) == set(counts)
    for name, trainable in counts.items():
        assert rows[name]["trainable"] == trainable and rows[name]["allreduced_bytes_per_step"] == 4 * trainable
    assert rows["LoRA c_attn r=8"]["allreduced_bytes_per_step"] == 589_824  # the 0.59 MB
    assert round(rows["full fine-tuning"]["allreduced_bytes_per_step"] / 1e6) == 328
    with pytest.raises(ValueError, match="processes=1 is not allowed"):
        wire.measure(processes=1)


@pytest.mark.slow
def test_fsdp_shards_every_weight_on_both_processes(launched):
    for i in FSDP:
        r0, r1 = ranks(launched[0] / str(i))
        model = build(CASES[i]["arch"], CASES[i]["lora"])
        assert r0["sharded"] == r1["sharded"] == sum(1 for _ in model.parameters())  # every one a DTensor
        assert r0["wire_bytes"] is None


@pytest.mark.slow
def test_the_finetune_cli_under_torchrun_with_fsdp_evaluates_in_step_and_refuses_a_merge(tmp_path):
    out = tmp_path / "fsdp"
    common = ["--model", "distilgpt2-random", "--rank", "8", "--targets", "c_attn", "--steps", "2", "--batch-size",
              "2", "--seq-len", "32", "--eval-limit", "2", "--max-new-tokens", "2", "--samples", "1", "--fsdp"]
    refused = torchrun_cli(*common, "--merge", "--out", str(out), timeout=120)
    assert refused.returncode != 0 and "merge=True is not allowed under FSDP" in refused.stderr
    done = torchrun_cli(*common, "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("wrote ") == 1  # rank 0 alone writes, though every process evaluated
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                     "metrics.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == "fsdp" and metrics["processes"] == 2 and metrics["steps"] == 2
    assert metrics["heldout_loss_after"] is not None and metrics["allreduced_bytes_per_step"] is None


def test_fsdp_needs_a_launcher(capsys):
    from lora_core.training import finetune

    with pytest.raises(SystemExit):
        finetune.main(["--model", "distilgpt2-random", "--fsdp", "--steps", "1"])
    assert "--fsdp is not allowed in one process" in capsys.readouterr().err


@pytest.mark.slow
def test_a_diverging_step_stops_both_processes_at_the_same_step(launched):
    r0, r1 = ranks(launched[0] / str(len(CASES)))
    assert r0["diverged"] and r0["diverged"] == r1["diverged"]  # the same reason, at the same step
    assert len(r0["losses"]) == len(r1["losses"]) < DIVERGING["steps"]
    assert r0["base_unchanged"] and r1["base_unchanged"]


@pytest.mark.slow
def test_each_process_draws_its_own_dropout_masks(launched):
    for i in range(len(CASES)):
        r0, r1 = ranks(launched[0] / str(i))
        assert r0["dropout_stream"] != r1["dropout_stream"]
