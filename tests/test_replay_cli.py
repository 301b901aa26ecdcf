"""The research replays' command line: `list`, bad input, and every quick replay run for real on SmolLM2.

The quick versions train SmolLM2-135M-Instruct (offline) for a few steps per run; together they take about a
quarter of an hour on a 2-core CPU, in one process so that shared runs are trained once, as `run all` does.
"""

from __future__ import annotations

import json

import pytest

from lora_core.research import record, verdicts
from lora_core.research.cli import main
from lora_core.research.experiments import ALL_ORDER, NAMES


def test_list_names_every_experiment_with_its_paper():
    lines = []
    assert main(["list"], log=lines.append) == 0
    assert [line.split()[0] for line in lines] == list(NAMES)
    assert all("[" in line and "]" in line for line in lines)  # each names the paper it replays


def test_an_unknown_experiment_is_refused_before_anything_loads(capsys):
    with pytest.raises(SystemExit):
        main(["run", "nope", "--quick"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_run_all_order_covers_every_experiment_once():
    assert sorted(ALL_ORDER) == sorted(NAMES)


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("replay")
    lines = []
    assert main(["run", "all", "--quick", "--out", str(out)], log=lines.append) == 0
    return out, lines


@pytest.mark.parametrize("name", NAMES)
def test_each_quick_replay_writes_a_well_formed_result(quick_results, name):
    out, _ = quick_results
    result = record.load(out / f"{name}.json")   # checks every required field
    assert result["name"] == name and result["scale"] == "quick"
    assert result["command"] == f"python -m lora_core.replay run {name} --quick --out {out}"
    assert result["commit"] and result["device"].startswith("CPU") and result["seconds"] > 0
    assert result["seeds"] == [0]
    json.dumps(result, allow_nan=False)  # strict JSON: no NaN or infinity anywhere
    v = verdicts.verdict(result)
    assert v["verdict"] in verdicts.VERDICTS and v["ours"] and v["rule"]


def test_quick_runs_report_progress_and_share_runs(quick_results):
    _, lines = quick_results
    trained = [line for line in lines if line.startswith("  ")]
    # subspace and amplification reuse the rank sweep's adapters: no LoRA q+v run is trained twice
    qv = [line.split(":")[0] for line in trained if line.startswith("  LoRA q+v ")]  # "  LoRA q+v r=8, lr .., seed 0"
    assert len(qv) == len(set(qv)) and len(qv) >= 6
