"""`make gpu-check` without a GPU: it stops at once, and its own code is tried here on the CPU at tiny sizes."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lora_core.bench import gpu_check, gpu_parts

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")
def test_without_cuda_the_check_stops_at_once_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu"
    done = subprocess.run([sys.executable, "-m", "lora_core.bench.gpu_check", "--out", str(out)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "needs a CUDA GPU" in done.stderr and "Nothing was run" in done.stderr and "--rehearse" in done.stderr
    assert not out.exists()


def test_make_gpu_check_calls_the_check_on_the_machine_s_own_python():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ngpu-check:\n", 1)[1].splitlines()[0]
    assert "-m lora_core.bench.gpu_check" in recipe and "$(GPU_PYTHON)" in recipe and "$(PY)" not in recipe
    assert "GPU_PYTHON ?= python3" in makefile


def test_the_bench_parts_ask_for_the_issue_s_settings():
    eager, compiled, graphs = (gpu_check.bench_args(p) for p in ("bench", "bench-compiled", "bench-graphs"))
    for args in (eager, compiled, graphs):
        assert args[args.index("--device") + 1] == "cuda" and args[args.index("--dtype") + 1] == "bf16"
        assert args[args.index("--batch") + 1] == "16" and args[args.index("--seq") + 1] == "256"
        assert {"c_attn", "all-linear", "frozen", "ours", "peft"} <= set(args) and "--json" in args
    assert {"8", "64", "ours-plain", "full", "lora", "dora"} <= set(eager)
    assert "--compile" in compiled and "ours-plain" in compiled
    # a CUDA-graph crash ends its process: the eager and compiled parts must not depend on it
    assert "--cuda-graphs" in graphs and "--cuda-graphs" not in eager + compiled
    assert gpu_check.PARTS.index("bench-graphs") > gpu_check.PARTS.index("bench")
    assert gpu_check.PARTS[-1] == "finetune"  # the longest part, and the one that keeps its rows when cut short
    with pytest.raises(ValueError, match="part='finetune'"):
        gpu_check.bench_args("finetune")


def _cuda_tests(path: Path) -> tuple[bool, list[tuple[str, bool]]]:
    """(the module is marked gpu, [(test, marked gpu)] for each test a decorator skips without CUDA)."""
    tree = ast.parse(path.read_text())
    module_gpu = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                     and "pytest.mark.gpu" in ast.unparse(n.value) for n in tree.body)
    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            decorators = [ast.unparse(d) for d in node.decorator_list]
            if module_gpu or any("not torch.cuda.is_available()" in d for d in decorators):  # skipped without CUDA
                found.append((node.name, module_gpu or "pytest.mark.gpu" in decorators))
    return module_gpu, found


def test_every_cuda_test_is_marked_gpu_and_listed_for_the_check():
    listed = {ROOT / f for f in gpu_check.GPU_TEST_FILES}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        _, cuda_tests = _cuda_tests(path)
        assert all(marked for _, marked in cuda_tests), (path.name, cuda_tests)
        if cuda_tests:
            assert path in listed, f"{path.name} has tests marked gpu: add it to gpu_check.GPU_TEST_FILES"
    assert all(p.exists() and _cuda_tests(p)[1] for p in listed)


def test_the_gpu_tests_collect_without_streamlit_or_plotly():
    """A GPU machine has neither: conftest and every listed test file must import without them."""
    files = list(gpu_check.GPU_TEST_FILES)
    code = ("import sys; sys.modules['streamlit'] = None; sys.modules['plotly'] = None; import pytest; "
            f"sys.exit(pytest.main(['-q', '--co', '-m', 'gpu', '-p', 'no:cacheprovider', *{files!r}]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "test_gpu.py::test_logits_and_merge_equal_peft_on_cuda" in done.stdout


def test_junit_summary_counts_passes_failures_and_skips(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text('<testsuites><testsuite><testcase classname="t" name="a"/>'
                   '<testcase classname="t" name="b"><failure message="boom"/></testcase>'
                   '<testcase classname="t" name="c"><skipped message="needs CUDA"/></testcase>'
                   '<testcase classname="t" name="d"><error message="setup"/></testcase></testsuite></testsuites>')
    s = gpu_check.junit_summary(xml)
    assert (s["passed"], s["failed"], s["skipped"]) == (1, 2, 1)
    assert [f["test"] for f in s["failures"]] == ["t::b", "t::d"] and s["failures"][0]["message"] == "boom"


def test_nf4_part_matches_its_float64_reference_on_the_cpu():
    result = gpu_parts.nf4_check("cpu", shapes=((96, 64), (40, 72)), repeats=1)
    assert result["ok"], result
    for row in result["rows"]:
        assert row["off_midpoint_mismatches"] == 0 and row["codes_equal_cpu"] and row["absmax_max_abs_diff"] == 0
        assert row["layer_output_max_abs_diff"] < 1e-5 * row["layer_output_scale"]


def test_the_reference_is_not_the_code_it_checks():
    """A wrong level (a shifted codebook) must show up as mismatches against the reference."""
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)) * 0.02
    codes, absmax, _ = gpu_parts.reference_nf4(w)
    assert codes.shape == (64, 64) and torch.allclose(absmax.float(), w.abs().amax(dim=1).double().float())
    from lora_core.quant.codebook import nf4_codebook, quantize_blockwise
    shifted = quantize_blockwise(w, nf4_codebook() * 0.9, 64)
    assert (shifted.codes.long() != codes).sum() > 100


def test_a_rehearsed_fine_tune_trains_in_every_base_precision():
    result = gpu_parts.finetune_rows("cpu", rehearse=True)
    assert result["ok"] and [r["precision"] for r in result["rows"]] == ["fp32", "bf16", "nf4"]
    weights = {r["precision"]: r["base_weight_bytes"] for r in result["rows"]}
    assert weights["bf16"] < weights["nf4"] < weights["fp32"]  # tiny blocks: the fp32 embedding dominates NF4's bytes
    for row in result["rows"]:
        assert row["steps"] == 3 and row["tokens_per_s"] > 0
        assert row["trainable"] == 2 * 8 * ((576 + 576) + (576 + 192))  # 2 blocks of q and v (v: 3 KV heads of 64)


def test_the_full_cases_are_smollm2_in_three_precisions_and_a_1b_llama():
    cases = gpu_parts.finetune_cases(steps=300)
    assert [(c.model, c.precision) for c in cases] == [("SmolLM2-135M", "fp32"), ("SmolLM2-135M", "bf16"),
                                                        ("SmolLM2-135M", "nf4"), ("Llama-3.2-1B", "bf16")]
    assert all(c.steps >= 100 for c in cases)


def test_a_rehearsal_writes_one_json_per_part_with_provenance(tmp_path):
    assert gpu_check.main(["--rehearse", "--out", str(tmp_path), "--parts", "nf4"]) == 0
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["ok"] and summary["rehearsal"] and set(summary["parts"]) == {"nf4"}
    assert {"command", "commit", "device", "torch", "time"} <= set(summary["provenance"])
    assert {"torch", "transformers", "peft", "cuda", "gpu"} <= set(summary["versions"])
    assert json.loads((tmp_path / "gpu_nf4.json").read_text())["ok"]


def test_a_part_stopped_at_its_limit_keeps_what_it_printed():
    code, out, _ = gpu_check._child(["-c", "import time; print('{\"row\": {\"n\": 1}}', flush=True); time.sleep(60)"],
                                    timeout=5, rehearse=False)
    assert code is None and '{"row": {"n": 1}}' in out


def test_the_commit_a_sender_names_wins_over_a_copied_tree_s_git(monkeypatch):
    from lora_core.provenance import provenance

    monkeypatch.setenv("LORA_LAB_COMMIT", "6e0e3e4")
    stamp = provenance("lora_core.bench.gpu_check", ["--out", "x"], "cpu")
    assert stamp["commit"] == "6e0e3e4" and stamp["uncommitted_changes"] is None
    monkeypatch.delenv("LORA_LAB_COMMIT")
    assert provenance("lora_core.bench.gpu_check", [], "cpu")["commit"] != "6e0e3e4"


def test_gpu_report_reads_each_part_from_the_newest_run_that_has_it(tmp_path, monkeypatch):
    from lora_core.bench import gpu_report

    def write_run(name, time, parts):
        folder = tmp_path / name
        folder.mkdir()
        summary = {"provenance": {"commit": f"{name}0000000", "time": time},
                   "parts": {p: {"ok": ok, "seconds": 1.0} for p, ok in parts.items()}}
        (folder / "gpu_check.json").write_text(json.dumps(summary))
        for part in parts:
            (folder / f"gpu_{part}.json").write_text(json.dumps({"part": part, "from": name}))

    # folder names sort the other way round from their times: the provenance's time decides
    write_run("runB", "2026-11-29T10:00:00+00:00", {"nf4": False, "bench_compiled": True})
    write_run("runA", "2026-11-29T20:00:00+00:00", {"nf4": True})
    monkeypatch.setattr(gpu_report, "GPU_RESULTS_DIR", tmp_path)
    assert [name for name, _ in gpu_report.runs()] == ["runB", "runA"]
    nf4 = gpu_report.shipped_gpu("nf4")
    assert nf4["from"] == "runA" and nf4["run"]["commit"] == "runA000"
    assert gpu_report.shipped_gpu("bench_compiled")["from"] == "runB"
    assert gpu_report.shipped_gpu("finetune") is None and gpu_report.finetune_table() == []
    assert [(r["run"], r["part"], r["ok"]) for r in gpu_report.part_status()] == [
        ("runB", "nf4", False), ("runB", "bench_compiled", True), ("runA", "nf4", True)]
