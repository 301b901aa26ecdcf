"""One process of tests/test_distributed.py's launches: `torchrun --nproc_per_node 2 tests/dist_worker.py OUT CASES`.

For each case (a JSON list of {"arch", "lora": LoraConfig kwargs, "train": TrainConfig kwargs, "steps", and
optionally "strategy": "ddp" or "fsdp"}) it trains
conftest's tiny model with DistributedTrainer, rank 0 saves the adapter into OUT/<i>/, and every rank writes
OUT/<i>/rank<k>.json: its losses, the bytes DDP all-reduced, and whether its frozen base is bit-for-bit unchanged.
"""

import json
import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from conftest import GPT2_TOKENS, tiny_gpt2, tiny_llama  # noqa: E402

import lora_core as lc  # noqa: E402
from lora_core.training.data import Dataset, load_dataset  # noqa: E402
from lora_core.training.distributed import DistributedTrainer  # noqa: E402
from lora_core.training.trainer import TrainConfig, TrainingDiverged  # noqa: E402

VOCAB = dict(**GPT2_TOKENS, initializer_range=0.2, pad_token_id=50256)


def build(arch: str, lora: dict) -> torch.nn.Module:
    """The tiny model with its adapter, the same on every process and in the single-process reference."""
    if arch == "gpt2":
        model = tiny_gpt2(n_embd=64, n_positions=64, dropout=0.0, **VOCAB)
    else:
        model = tiny_llama(hidden_size=64, intermediate_size=128, max_position_embeddings=64, **VOCAB)
    lc.inject_lora(model, lc.LoraConfig(**lora), generator=torch.Generator().manual_seed(3))
    return model


def small_data() -> Dataset:
    full = load_dataset("recommendations")
    return Dataset("small", full.train[::9], full.test[:6])


def main(out: str, cases: str) -> None:
    torch.set_num_threads(1)
    tok = lc.models.gpt2_tokenizer()
    for i, case in enumerate(json.loads(cases)):
        model = build(case["arch"], case["lora"])
        frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        trainer = DistributedTrainer(model, tok, small_data(), TrainConfig(**case["train"]),
                                     strategy=case.get("strategy", "ddp"))
        try:
            trainer.run(case["steps"])
            diverged = None
        except TrainingDiverged as err:  # every rank must stop at the same step, none left in a collective
            diverged = err.reason
        history = trainer.history
        folder = Path(out) / str(i)
        trainer.save(folder)
        rank = trainer.accelerator.process_index
        whole = {n: p.full_tensor() if hasattr(p, "full_tensor") else p  # FSDP: gather the shards (all ranks)
                 for n, p in model.named_parameters() if n in frozen}
        unchanged = all(torch.equal(p, frozen[n]) for n, p in whole.items())
        (folder / f"rank{rank}.json").write_text(json.dumps({
            "world": trainer.accelerator.num_processes, "losses": [m["loss"] for m in history],
            "wire_bytes": trainer.wire and trainer.wire.bytes, "wire_calls": trainer.wire and trainer.wire.calls,
            "base_unchanged": unchanged, "sharded": sum(hasattr(p, "full_tensor") for p in model.parameters()),
            "diverged": diverged, "dropout_stream": str(trainer.state_dict()["rng"]["cpu"][:64].tolist()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
