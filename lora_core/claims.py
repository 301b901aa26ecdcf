"""The claims check: each claim the seed documents make, its verdict, and live evidence for it.

    from lora_core import claims
    for c in claims.claims_check():          # 23 ClaimEvidence, one per row of CLAIMS.md
        print(c.row, c.verdict, c.evidence.metrics)
    claims.claim(15, weight=w)               # one row, lazily; NF4 errors on a real weight too

Verdicts: ✓ right, ~ partly right, ✗ wrong, ? unverified (measure it). The verdicts are the
project's (CLAIMS.md); every number behind them is computed here by lora_core, at call time or
from a cache, except where a row says it shows a file on disk (runs/) or a cited source.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from . import claims_rows
from .claims_rows import SEED_000  # re-exported: the seeds' own numbers
from .evidence import Evidence, one_thread

__all__ = ["CLAIMS", "SEED_000", "VERDICTS", "Claim", "ClaimEvidence", "claim", "claims_check", "verdict_counts"]

VERDICTS = {"✓": "right", "~": "partly right", "✗": "wrong", "?": "unverified: measure it"}


@dataclass(frozen=True)
class Claim:
    """One row of CLAIMS.md: which seed says it, what it says (our words), and the verdict."""

    row: int
    seed: str
    claim: str
    verdict: str          # one of VERDICTS
    qualifier: str = ""   # e.g. "on GPT-2": where the verdict applies


@dataclass(frozen=True)
class ClaimEvidence:
    """A claim with the truth in words (numbers filled in live) and the evidence behind it."""

    row: int
    seed: str
    claim: str
    verdict: str
    qualifier: str
    truth: str
    evidence: Evidence

    @property
    def verdict_name(self) -> str:
        return VERDICTS[self.verdict] + (f" ({self.qualifier})" if self.qualifier else "")


CLAIMS = (
    Claim(1, "000", "LoRA at r=8 on distilgpt2's c_attn trains about 98,304 parameters, 0.12% of its 82M.", "✗"),
    Claim(2, "000", "A rank-8 pair on a 768×768 matrix costs 768·8 + 8·768 = 12,288 parameters, about 2% "
                    "of the matrix's 589,824.", "✓"),
    Claim(3, "000", "lora_dropout=0.1 sets 10% of the entries of A and B to zero.", "✗"),
    Claim(4, "000", "The wrong task_type would cause errors or poor performance.", "~"),
    Claim(5, "000", "Set α to 2r or 4r, as the LoRA papers do.", "~"),
    Claim(6, "000", "Fine-tuning on 4 examples for 5 epochs reaches a BLEU of about 0.65.", "?"),
    Claim(7, "000", "Merged LoRA weights serve with zero inference overhead.", "✓"),
    Claim(8, "001", "A starts as random Gaussian numbers and B as zeros, so ΔW = 0 at the start.", "~"),
    Claim(9, "001", "PEFT's defaults are r=8, lora_alpha=8 and lora_dropout=0.", "✓"),
    Claim(10, "001", "Under Adam, tuning α is roughly the same as tuning the learning rate.", "✓"),
    Claim(11, "001", "The regex `\\((\\w+)\\): Linear` over print(model) lists every linear layer.", "✗",
          "on GPT-2"),
    Claim(12, "001", "loralib supports only nn.Linear, nn.Embedding and nn.Conv2d.", "~"),
    Claim(13, "001", "Its LoraConfig code example is ready to run.", "✗"),
    Claim(14, "002", "A QLoRA recipe with r=64 and lora_alpha=16.", "✓", "note"),
    Claim(15, "002", "NF4 represents weights with logarithmic scaling.", "✗"),
    Claim(16, "002", "QLoRA saves memory partly by training only a few of the model's layers.", "✗"),
    Claim(17, "002", "SFTTrainer comes from Hugging Face's PEFT library.", "✗"),
    Claim(18, "002", "bf16 is better for training on new GPUs; fp32 is more precise but uses more memory.", "✓"),
    Claim(19, "003", "A LoRA layer computes W(x) + A @ B @ x, and only A and B train.", "~"),
    Claim(20, "003", "Add lm_head to target_modules for a 'deep modification'.", "~"),
    Claim(21, "004", "Use the product W_A·W_B as an approximation of W.", "✗"),
    Claim(22, "004", "LoRA fine-tunes only a subset of the parameters that matter for the task.", "✗"),
    Claim(23, "004", "Adapting to a new task has a low intrinsic dimension (Aghajanyan et al. 2020).", "✓"),
)


_BUILDERS = {c.row: getattr(claims_rows, f"row{c.row}") for c in CLAIMS}
# Rows whose evidence reads runs/ on disk are rebuilt on every call; the rest are cached.
_READS_RUNS = {6, 23}


def claim(row: int, weight: torch.Tensor | None = None, runs_dir: str | Path | None = None) -> ClaimEvidence:
    """The evidence for one row of CLAIMS.md (1–23), computed now (expensive parts are cached)."""
    if isinstance(row, bool) or not isinstance(row, int) or row not in _BUILDERS:
        raise ValueError(f"row={row!r} is not allowed: use a CLAIMS.md row number from 1 to {len(CLAIMS)}")
    if row in _READS_RUNS:
        return _claim(row, None, runs_dir)
    return _cached_claim(row, weight)


def _claim(row: int, weight: torch.Tensor | None, runs_dir: str | Path | None) -> ClaimEvidence:
    with one_thread:  # small tensors: one thread is faster, and immune to a busy machine
        truth, ev = _BUILDERS[row](weight=weight, runs_dir=runs_dir)
    return ClaimEvidence(**dataclasses.asdict(CLAIMS[row - 1]), truth=truth, evidence=ev)


@functools.lru_cache(maxsize=64)
def _cached_claim(row: int, weight: torch.Tensor | None) -> ClaimEvidence:
    return _claim(row, weight, None)


def claims_check(weight: torch.Tensor | None = None, runs_dir: str | Path | None = None) -> list[ClaimEvidence]:
    """Every claim with its verdict and live evidence. `weight`: a real matrix for rows 15 and 21."""
    return [claim(c.row, weight, runs_dir) for c in CLAIMS]


def verdict_counts(rows: list[ClaimEvidence]) -> dict[str, int]:
    """How many claims got each verdict, in the order of VERDICTS."""
    return {v: sum(c.verdict == v for c in rows) for v in VERDICTS}
