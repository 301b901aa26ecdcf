"""The claims check (lora_core.teach.claims): each of the 33 rows of CLAIMS.md (1–23) and CLAIMS-2.md (24–33) is a
named, checked entry of a table a teacher can extend, and each row's verdict and evidence come from lora_core's own
numbers."""

import ast
import re
from pathlib import Path

import pytest
from conftest import tiny_gpt2

import lora_core as lc
from lora_core.teach.claims import check, counts, second, second_measured, sources, table
from lora_core.viz.claims import claims_figure

SHARED = Path(__file__).resolve().parents[1].parent / "shared"   # ../shared beside the repo root
CLAIMS_FILES = ("CLAIMS.md", "CLAIMS-2.md")
# The verdict column of both files, pinned so the test runs where they are not mounted.
VERDICTS = ["✗", "✓", "✗", "~", "~", "?", "✓", "~", "✓", "✓", "✗", "~", "✗", "✓", "✗", "✗", "✗", "✓", "~", "~",
            "✗", "✗", "✓",
            "✗", "✗", "✗", "✗", "~", "✗", "✗", "~", "✗", "✗"]


def test_claims_table_entries_are_named_and_checked():
    assert [c.row for c in table.CLAIMS] == list(range(1, 34)) and table.SOURCES == CLAIMS_FILES
    assert {c.row for c in table.CLAIMS if c.source == "CLAIMS-2.md"} == set(range(24, 34))
    for c in table.CLAIMS:
        name = c.measure.__name__
        assert name.isidentifier() and name != "<lambda>" and not re.fullmatch(r"row\d+", name), c.row
        assert c.measure.__module__.startswith("lora_core.teach.claims."), c.row
    first = table.CLAIMS[0]
    assert (first.row, first.verdict, first.measure) == (1, "✗", counts.count_c_attn_r8)
    later = table.Claim(34, "000", "a claim of a third file", "✗", counts.count_c_attn_r8, source="CLAIMS-3.md")
    assert table.check_table((*table.CLAIMS, later))[34].source == "CLAIMS-3.md"   # room for more files
    with pytest.raises(ValueError, match="row=7 appears twice"):
        table.check_table((*table.CLAIMS, table.CLAIMS[6]))
    with pytest.raises(ValueError, match="verdict='!' of row 24"):
        table.check_table((table.Claim(24, "000", "x", "!", counts.count_c_attn_r8),))
    with pytest.raises(ValueError, match=r"inputs=\['model'\] of row 24"):
        table.check_table((table.Claim(24, "000", "x", "?", counts.count_c_attn_r8, inputs=("model",)),))




def _claims_files_verdicts() -> dict[int, tuple[str, str]]:
    """{row: (verdict, file)} parsed from both claims files, or the pinned column where they are not mounted."""
    if not all((SHARED / name).is_file() for name in CLAIMS_FILES):
        return {i: (v, "CLAIMS.md" if i <= 23 else "CLAIMS-2.md") for i, v in enumerate(VERDICTS, 1)}
    found: dict[int, tuple[str, str]] = {}
    for name in CLAIMS_FILES:
        for line in (SHARED / name).read_text(encoding="utf-8").splitlines():
            if m := re.match(r"^\|\s*(\d+)\s*\|", line):
                assert int(m.group(1)) not in found, f"row {m.group(1)} twice"
                found[int(m.group(1))] = (line.split("|")[4].strip()[0], name)
    return found


def test_claims_check_has_every_row_of_both_files_with_its_verdict_and_evidence():
    rows = check.claims_check()
    files = _claims_files_verdicts()
    assert sorted(files) == list(range(1, 34)) and [v for _, (v, _) in sorted(files.items())] == VERDICTS
    assert [c.row for c in rows] == list(range(1, 34))
    assert [(c.verdict, c.source) for c in rows] == [files[c.row] for c in rows]
    assert list(check.by_source(rows)) == list(CLAIMS_FILES)
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
    with pytest.raises(ValueError, match="row=34"):
        check.claim(34)


def test_bleu_row_reads_runs_or_says_how_to_measure(tmp_path):
    empty = check.claim(6, runs_dir=tmp_path)
    assert empty.verdict == "?" and "python -m lora_core.finetune" in empty.truth
    run = tmp_path / "r1"
    run.mkdir()
    (run / "metrics.json").write_text('{"model": "m", "steps": 5, "bleu_before": 1.0, "bleu_after": 12.5}')
    measured = check.claim(6, runs_dir=tmp_path)
    assert measured.evidence.metrics["best measured BLEU"] == "12.50"


# --- rows 4, 5, 8 and 23: the corrected truths -----------------------------------------------------------------
def test_row_4_shows_the_classification_head_and_a_failing_task_type():
    four = check.claim(4)
    m = four.evidence.metrics
    assert (m["classifier, no task_type"], m["classifier, SEQ_CLS"]) == ("512", "576")
    assert m["head trains without task_type"] == "no" and "poorer performance, no" not in four.truth
    assert "classifier stays poor" in four.truth and "base_model.model.score.weight" in four.evidence.code
    assert m["'SEQ_2_SEQ_LM' on GPT-2"] == "AttributeError"
    assert {r["task_type"] for r in four.evidence.table if "Classification" in r["model"]} == {"None", "'SEQ_CLS'"}


def test_row_5_quotes_the_authors_scripts_as_quoted():
    five = check.claim(5)
    m = five.evidence.metrics
    assert (m["α/r, RoBERTa scripts (quoted)"], m["α/r, DeBERTa XXL script (quoted)"],
            m["α/r, GPT-2 E2E script (quoted)"]) == ("2", "2", "8")
    assert "not α = r" in five.truth and "microsoft/LoRA examples/NLU, examples/NLG" in five.truth
    assert all(r["source"] == "quoted" for r in five.evidence.table)


def test_row_8_sets_the_papers_gaussian_against_loralib_and_peft_code():
    eight = check.claim(8)
    assert "loralib" in eight.truth and "a=math.sqrt(5)" in eight.truth
    assert "kaiming_uniform_(self.lora_A, a=math.sqrt(5))" in eight.evidence.code         # loralib, quoted
    if sources.peft_init_line() is not None:                                              # PEFT, read live
        assert "kaiming_uniform_(self.lora_A[adapter_name].weight" in eight.evidence.code


def test_row_23_never_passes_the_planted_toy_off_as_evidence(tmp_path, monkeypatch):
    from lora_core.research import record
    monkeypatch.setattr(record, "RESULTS_DIR", tmp_path / "none")     # a copy without shipped replays
    empty = check.claim(23, runs_dir=tmp_path)
    assert "intrinsic *dimension*" in empty.truth and "LoRA paper's hypothesis" in empty.truth
    assert "never from a toy" in empty.truth and "python -m lora_core.replay run rank forgetting" in empty.truth
    assert empty.evidence.metrics == {"real runs found": "0"} and empty.evidence.figure is None
    model = tiny_gpt2()                                            # an adapter saved as the finetune CLI saves one
    lc.inject_lora(model, lc.LoraConfig(r=4, target_modules=["c_attn"], init_lora_weights=False))
    lc.save_adapter(model, tmp_path / "run-r4")
    saved = check.claim(23, runs_dir=tmp_path)
    assert saved.evidence.metrics["real runs found"] == "1" and "run-r4" in saved.truth
    assert saved.evidence.table[0]["r"] == 4


def test_row_23_reads_the_shipped_replays_when_present(tmp_path):
    from lora_core.research import record
    if record.shipped("forgetting") is None or record.shipped("rank") is None:
        pytest.skip("results/replay/ holds no shipped forgetting and rank results")
    row = check.claim(23, runs_dir=tmp_path)
    ranks = record.shipped("forgetting")["results"]["full_delta_ranks"]
    every = sorted(x for p in ranks.values() for x in p["rank_90"])
    middle = (every[(len(every) - 1) // 2] + every[len(every) // 2]) / 2          # the median, by hand
    assert row.evidence.metrics["full fine-tune ΔW: median rank for 90% energy"] == f"{middle:g}"
    assert row.evidence.metrics["rank sweep verdict"] in ("held", "held in direction but smaller", "did not hold here")
    series = row.evidence.figure["series"]
    assert series and all(name.startswith(("full fine-tune ΔW", "trained adapter")) for name in series)
    assert not any("toy" in key for key in row.evidence.metrics)


# --- rows 24–33 (CLAIMS-2.md) ---------------------------------------------------------------------------------------
def test_rows_24_to_33_come_from_claims_2_with_live_evidence():
    by = {c.row: c for c in check.claims_check() if c.row >= 24}
    assert sorted(by) == list(range(24, 34)) and {c.source for c in by.values()} == {"CLAIMS-2.md"}
    for c in by.values():
        assert c.evidence.metrics and (c.evidence.table or c.evidence.figure or c.evidence.code), c.row


def test_row_24_task_type_token_classification_is_refused_by_both_libraries():
    c = check.claim(24)
    refused = c.evidence.table[0]
    assert refused["task_type"] == "TOKEN_CLASSIFICATION"
    assert "task_type='TOKEN_CLASSIFICATION' is not allowed" in refused["lora_core"]
    if "PEFT" in refused:
        assert refused["PEFT"].startswith("ValueError: Invalid task type: 'TOKEN_CLASSIFICATION'")
    assert [r["lora_core"] for r in c.evidence.table[1:]] == ["accepted", "accepted"]
    assert c.evidence.metrics["token classification is"] == "TOKEN_CLS" and "TaskType.TOKEN_CLS" in c.evidence.code


def test_row_25_seed_003_snippet_fails_to_parse_because_of_slashes():
    s = second.seed_003_snippet()
    assert s["broken"].count("//") == 4 and s["error"]["message"] == "invalid syntax"
    with pytest.raises(SyntaxError):
        ast.parse(check.claim(25).evidence.code)
    assert s["keywords"]["task_type"] == "CAUSAL_LM" and s["config_ok"]
    assert second.seed_003_snippet(commented=())["error"] is None      # the comments alone break it


def test_rows_26_27_29_and_32_numbers():
    by = {c.row: c.evidence.metrics for c in check.claims_check() if c.row in (26, 27, 29, 32)}
    assert by[26]["zeros in A"] == by[26]["zeros in B"] == "0.0%" and by[26]["zeros in dropout(x) → A"] != "0.0%"
    ranks = second_measured.data_keeps_its_dimension()
    assert ranks["rank x"] == ranks["rank output"] == ranks["d"] and ranks["rank ΔW·x"] == ranks["r"] == 8
    assert by[27]["rank of ΔW·x"] == "8"
    assert (by[29]["pair"], by[29]["all params"], by[29]["pair / all"]) == ("12,288", "82,060,032", "0.0150%")
    assert by[29]["seed's 98,304 / all"] == "0.1198%"
    assert (by[32]["levels"], by[32]["bits"]) == ("16", "4")


def test_row_28_counts_the_papers_setting_beside_quoted_figures():
    c = check.claim(28)
    m = c.evidence.metrics
    assert m["LoRA r=4 on W_q, W_v (counted)"] == "393,216"                    # 24·2·4·(1024+1024)
    assert (m["Adapter (L), paper (quoted)"], m["LoRA, paper (quoted)"]) == ("0.37M", "0.35M")
    assert m["LoRA layers left after merge"] == "0" and "quoted" in c.truth


def test_row_30_target_modules_alone_decides_where_lora_goes():
    c = check.claim(30)
    assert c.evidence.metrics["distinct wrapped sets (lora_core)"] == "1"
    assert len(c.evidence.table) == 7 and all(r["same modules in both"] in (True, None) for r in c.evidence.table)
    assert c.evidence.code.splitlines() == [f"transformer.h.{i}.attn.c_attn" for i in range(6)]


def test_row_31_dividing_by_r_shrinks_and_rslora_does_not():
    c = check.claim(31)
    m = c.evidence.metrics
    assert (m["α/r at r=8"], m["α/r at r=64"], m["r=64 / r=8 (α/r)"]) == ("2", "0.25", "0.125")
    shrink, rs = float(m["‖ΔW‖ after 5 steps, r=64 / r=8, α/r"]), float(m["‖ΔW‖ after 5 steps, r=64 / r=8, α/√r"])
    assert shrink < 1 < rs
    fig = claims_figure(c.evidence.figure)                                    # drawn against r, not against step
    assert c.evidence.figure["kind"] == "by_rank" and list(fig.data[0].x) == list(second_measured.RANKS)


class _Wrapper:
    def __init__(self, model, peft_config=None):
        self.model = get_peft_model(model, peft_config)  # noqa: F821 - read by inspect, never run


class _Trainer(_Wrapper):
    def train(self):
        return self.model


def test_row_33_wrapping_happens_before_training():
    c = check.claim(33)
    loaded, wrapped, trained = c.evidence.table
    assert loaded["trainable"] > wrapped["trainable"] == trained["trainable"] and loaded["LoRA layers"] == 0
    assert wrapped["‖B‖ summed"] == 0 < trained["‖B‖ summed"]
    assert "get_peft_model(model, peft_config" in c.evidence.code and "sft_trainer.py" in c.truth + c.evidence.code
    sites = sources.peft_call_sites(_Trainer)                                 # how an installed TRL would be read
    assert list(sites) == ["__init__ (_Wrapper)", "train"] and sites["train"] == []
    assert sites["__init__ (_Wrapper)"][0].startswith("self.model = get_peft_model(model, peft_config)")
