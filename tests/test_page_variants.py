"""AppTest for the Variants page: the study's four parts drawn from a result file (here the whole study run on a tiny
Llama, two steps per run, so the test never waits for SmolLM2), the verdict the rule computes, the provenance; the
exact command when no result is shipped; a broken file reported inline; the benchmark's DoRA rows when they exist;
and the live part, a real short run of one variant on distilgpt2-random.

If results/variants/variants.json (or the folder LORA_LAB_VARIANTS_RESULTS names) holds the shipped study, one more
test draws the page from it.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import GPT2_TOKENS, ROOT, errors, metrics, tiny_llama

import lora_core as lc
from lora_core.research import record, variants
from lora_core.research.e2e import make_task
from lora_core.research.variants_runs import Scale, Study

SOURCE = Path(os.environ.get("LORA_LAB_VARIANTS_RESULTS", ROOT / "results" / "variants"))
CHARTS = 4  # the ΔM-ΔD scatter, two sets of learning curves, the cost bars


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory) -> Path:
    """The whole study on a tiny Llama with GPT-2's vocabulary, written where a page can read it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = tiny_llama(max_position_embeddings=64, initializer_range=0.2, pad_token_id=50256,
                          **GPT2_TOKENS).requires_grad_(False)
        scale = Scale("quick", steps=2, checkpoint_every=1, noise_seeds=2, timing_repeats=1, batch_size=2, n_loss=4)
        study = Study(base, lc.models.gpt2_tokenizer(), make_task(0, n_train=32, n_test=8), scale)
        folder = tmp_path_factory.mktemp("variants")
        record.write(variants.run_study(study, ["run", "--quick", "--out", str(folder)]), folder)
    finally:
        torch.set_num_threads(threads)
    return folder


@pytest.fixture
def results_dir(tiny_result, monkeypatch) -> Path:
    monkeypatch.setattr(variants, "RESULTS_DIR", tiny_result)
    return tiny_result


@pytest.fixture
def no_results(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(variants, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(variants, "BENCH_VARIANTS", tmp_path / "cpu_variants.json")
    return tmp_path


def boxes(at) -> list[str]:
    return [b.value for kind in ("success", "warning", "error") for b in getattr(at, kind)]


def test_without_results_the_page_names_the_command_and_keeps_the_live_part(app_page, no_results):
    at = app_page("variants")
    assert not at.error, errors(at)
    info = " ".join(i.value for i in at.info)
    assert f"python -m lora_core.research.variants run --out {no_results}" in info
    assert f"python -m lora_core.research.variants run --quick --out {no_results}" in info
    assert not at.get("plotly_chart") and len(at.table) == 1              # the papers' own numbers only
    assert "variants:run" in {b.key for b in at.button}


def test_with_a_result_every_part_draws_with_the_verdict_and_provenance(app_page, results_dir):
    result = record.load(results_dir / "variants.json")
    at = app_page("variants")
    word = variants.verdict(result)["verdict"]
    assert not at.exception and [e.value for e in at.error] in ([], [word]), errors(at)  # "did not hold" is red
    assert len(at.get("plotly_chart")) == CHARTS
    assert word in boxes(at)
    tables = [df.value for df in at.dataframe]
    decomposition = next(t for t in tables if "paper's r (query)" in t.columns)
    assert list(decomposition["paper's r (query)"]) == ["-0.62", "+0.83", "-0.31"]
    ours = result["results"]["decomposition"]["fits"]["lora"]["q_proj"]["correlation"]
    assert decomposition.set_index("method").loc[result["results"]["decomposition"]["runs"]["lora"]["label"],
                                                 "r (q_proj)"] == f"{ours:+.2f}"
    cost = next(t for t in tables if "× LoRA" in t.columns)
    assert len(cost) == 7 and cost.set_index("variant")["× LoRA"].min() > 0
    provenance = next(t for t in tables if "what" in t.columns).set_index("what")
    assert provenance.loc["command", "value"] == result["command"]


def test_the_value_matrices_can_be_shown_instead(app_page, results_dir):
    at = app_page("variants")
    at.radio(key="variants:proj").set_value("v_proj").run()
    assert not at.exception
    titles = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["title"]["text"]
    assert "v_proj of every layer" in titles


def test_a_broken_result_file_is_reported_inline_and_the_live_part_still_draws(app_page, no_results):
    (no_results / "variants.json").write_text('{"name": "variants"}')
    at = app_page("variants")
    assert "result is missing title" in errors(at)
    assert "variants:run" in {b.key for b in at.button}


def test_the_benchmark_s_dora_rows_are_shown_when_it_has_them(app_page, no_results):
    dora = {"name": "ours dora c_attn r=8", "variant": "ours", "adapter": "dora", "ms": {"eager": 12.5},
            "vs_frozen": {"eager": 1.21}, "trainable": 150, "state_bytes": 1200, "saved_bytes": 4096}
    (no_results / "cpu_variants.json").write_text(json.dumps({"cases": [dora], "model": "distilgpt2",
                                                             "device_name": "CPU", "provenance": {
                                                                 "command": "python -m lora_core.bench"}}))
    at = app_page("variants")
    bench = next(df.value for df in at.dataframe if "× frozen" in df.value.columns)
    assert list(bench["case"]) == ["ours dora c_attn r=8"] and bench["ms / step"][0] == 12.5


def test_the_live_part_runs_a_variant_and_shows_its_step_zero_check(app_page, no_results):
    at = app_page("variants")
    next(s for s in at.selectbox if s.label == "model").set_value("distilgpt2-random")
    at.selectbox(key="variants:method").set_value("pissa")
    at.slider(key="variants:steps").set_value(1)
    at.button(key="variants:run").click().run()
    assert not at.exception and not at.error, errors(at)
    shown = metrics(at)
    assert float(shown["max |Δ logit| at step 0"]) < 1e-3               # PiSSA starts where the base was
    assert float(shown["mean ‖ΔW‖_F at step 0"]) > 0                     # with a real ΔW taken out of W
    assert len(at.get("plotly_chart")) == 1 and "PiSSA" in at.get("plotly_chart")[0].proto.spec


@pytest.mark.skipif(not (SOURCE / "variants.json").is_file(),
                    reason=f"no shipped study in {SOURCE}: run `{variants.study_command()}`")
def test_the_shipped_study_draws(app_page, tmp_path, monkeypatch):
    shutil.copy(SOURCE / "variants.json", tmp_path)
    monkeypatch.setattr(variants, "RESULTS_DIR", tmp_path)
    at = app_page("variants")
    word = variants.verdict(record.load(tmp_path / "variants.json"))["verdict"]
    assert [e.value for e in at.error] in ([], [word]), errors(at)
    assert len(at.get("plotly_chart")) == CHARTS and word in boxes(at)
