"""The claims check (lora_core.teach.claims): each of CLAIMS.md's 23 rows is a named, checked entry of a table a
teacher can extend, and each row's verdict and evidence come from lora_core's own numbers."""

import ast
import re
from pathlib import Path

import pytest

from lora_core.teach.claims import check, counts, table

CLAIMS_MD = Path(__file__).resolve().parents[2] / "shared" / "CLAIMS.md"  # ../shared beside the repo
# CLAIMS.md's verdict column, pinned so the test runs where that file is not mounted.
VERDICTS = ["✗", "✓", "✗", "~", "~", "?", "✓", "~", "✓", "✓", "✗", "~", "✗", "✓", "✗", "✗", "✗", "✓", "~", "~",
            "✗", "✗", "✓"]


def test_claims_table_entries_are_named_and_checked():
    assert [c.row for c in table.CLAIMS] == list(range(1, 24)) and {c.source for c in table.CLAIMS} == {"CLAIMS.md"}
    for c in table.CLAIMS:
        name = c.measure.__name__
        assert name.isidentifier() and name != "<lambda>" and not re.fullmatch(r"row\d+", name), c.row
        assert c.measure.__module__.startswith("lora_core.teach.claims."), c.row
    first = table.CLAIMS[0]
    assert (first.row, first.verdict, first.measure) == (1, "✗", counts.count_c_attn_r8)
    later = table.Claim(24, "000", "task_type='TOKEN_CLASSIFICATION' is an option", "✗", counts.count_c_attn_r8,
                        source="CLAIMS-2.md")
    assert table.check_table((*table.CLAIMS, later))[24].source == "CLAIMS-2.md"   # room for CLAIMS-2's rows
    with pytest.raises(ValueError, match="row=7 appears twice"):
        table.check_table((*table.CLAIMS, table.CLAIMS[6]))
    with pytest.raises(ValueError, match="verdict='!' of row 24"):
        table.check_table((table.Claim(24, "000", "x", "!", counts.count_c_attn_r8),))
    with pytest.raises(ValueError, match=r"inputs=\['model'\] of row 24"):
        table.check_table((table.Claim(24, "000", "x", "?", counts.count_c_attn_r8, inputs=("model",)),))




def _claims_md_verdicts() -> list[str]:
    if not CLAIMS_MD.is_file():
        return VERDICTS
    rows = [line.split("|") for line in CLAIMS_MD.read_text(encoding="utf-8").splitlines()
            if re.match(r"^\|\s*\d+\s*\|", line)]
    return [r[4].strip()[0] for r in rows]


def test_claims_check_has_every_row_with_its_verdict_and_evidence():
    rows = check.claims_check()
    assert [c.row for c in rows] == list(range(1, 24))
    assert [c.verdict for c in rows] == _claims_md_verdicts() == VERDICTS
    for c in rows:
        ev = c.evidence
        assert c.truth and (ev.metrics or ev.table or ev.figure or ev.code), c.row


def test_claims_evidence_numbers():
    by = {c.row: c for c in check.claims_check()}
    one = by[1].evidence
    assert (one.metrics["computed"], one.metrics["all params"], one.metrics["trainable %"]) == \
        ("147,456", "82,060,032", "0.1797")
    assert "98,304 is 4 × 24,576" in by[1].truth
    assert by[2].evidence.metrics["attn.c_proj pair"] == "12,288"
    assert by[3].evidence.metrics["zeros in A"] == by[3].evidence.metrics["zeros in B"] == "0.0%"
    assert by[11].evidence.metrics["regex on distilgpt2"] == "['lm_head']"
    assert "SyntaxError" in by[13].truth
    with pytest.raises(SyntaxError):
        ast.parse(by[13].evidence.code)
    assert by[15].evidence.metrics["log4 level ratio"] == "2"
    assert by[16].evidence.metrics["layers with LoRA"] == "32 of 32"
    assert float(by[7].evidence.metrics["max |Δlogit| merged vs unmerged"]) < 1e-5


def test_claim_rows_are_checked():
    with pytest.raises(ValueError, match="row=24"):
        check.claim(24)


def test_bleu_row_reads_runs_or_says_how_to_measure(tmp_path):
    empty = check.claim(6, runs_dir=tmp_path)
    assert empty.verdict == "?" and "python -m lora_core.finetune" in empty.truth
    run = tmp_path / "r1"
    run.mkdir()
    (run / "metrics.json").write_text('{"model": "m", "steps": 5, "bleu_before": 1.0, "bleu_after": 12.5}')
    measured = check.claim(6, runs_dir=tmp_path)
    assert measured.evidence.metrics["best measured BLEU"] == "12.50"
