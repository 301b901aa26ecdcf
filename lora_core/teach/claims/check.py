"""The claims check: each claim of the seed documents, its verdict, and live evidence for it.

    from lora_core.teach.claims import check
    for c in check.claims_check():          # one ClaimEvidence per entry of table.CLAIMS (rows 1–33)
        print(c.row, c.verdict, c.evidence.metrics)
    check.claim(15, weight=w)               # one row; NF4 errors on a real weight too

The claims themselves are data (table.py); this module runs an entry's `measure` and caches what
can be cached. A claim whose evidence depends on nothing is cached by its row number; one that is
given a real weight, or that reads saved runs from disk, is measured on every call (a cache keyed on
a tensor would keep it alive and match it by identity only, and runs/ changes).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from ..evidence import Evidence
from .quoted import SEED_000  # re-exported: the seeds' own numbers
from .table import BY_ROW, CLAIMS, SOURCES, VERDICTS, Claim

__all__ = ["CLAIMS", "SEED_000", "SOURCES", "VERDICTS", "Claim", "ClaimEvidence", "by_source", "claim", "claims_check",
           "verdict_counts"]


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
    source: str = "CLAIMS.md"

    @property
    def verdict_name(self) -> str:
        return VERDICTS[self.verdict] + (f" ({self.qualifier})" if self.qualifier else "")


def claim(row: int, weight: torch.Tensor | None = None, runs_dir: str | Path | None = None) -> ClaimEvidence:
    """The evidence for one claim, by row number, computed now (or from the cache, see the module docstring)."""
    if isinstance(row, bool) or not isinstance(row, int) or row not in BY_ROW:
        raise ValueError(f"row={row!r} is not allowed: use a row number of the claims table, "
                         f"{min(BY_ROW)} to {max(BY_ROW)}")
    entry = BY_ROW[row]
    given = {"weight": weight, "runs_dir": runs_dir}
    if "runs_dir" in entry.inputs or any(given[i] is not None for i in entry.inputs):
        return _measure(entry, {i: given[i] for i in entry.inputs})
    return _cached_claim(row)


def _measure(entry: Claim, inputs: dict) -> ClaimEvidence:
    truth, ev = entry.measure(**inputs)
    return ClaimEvidence(entry.row, entry.seed, entry.claim, entry.verdict, entry.qualifier, truth, ev, entry.source)


@functools.lru_cache(maxsize=64)
def _cached_claim(row: int) -> ClaimEvidence:
    return _measure(BY_ROW[row], {})


def claims_check(weight: torch.Tensor | None = None, runs_dir: str | Path | None = None) -> list[ClaimEvidence]:
    """Every claim with its verdict and live evidence. `weight`: a real matrix for the rows that take one."""
    return [claim(c.row, weight, runs_dir) for c in CLAIMS]


def verdict_counts(rows: list[ClaimEvidence]) -> dict[str, int]:
    """How many claims got each verdict, in the order of VERDICTS."""
    return {v: sum(c.verdict == v for c in rows) for v in VERDICTS}


def by_source(rows: list[ClaimEvidence]) -> dict[str, list[ClaimEvidence]]:
    """The rows grouped by the claims file they come from, files in SOURCES order (CLAIMS.md, CLAIMS-2.md)."""
    return {src: [c for c in rows if c.source == src] for src in SOURCES if any(c.source == src for c in rows)}
