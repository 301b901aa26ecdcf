"""AppTest for the Speed page: it shows the shipped CPU and H200 numbers, and its live button runs a (tiny)
benchmark. Timings are shown, never asserted."""

from lora_core.bench import gpu_report, report


def test_speed_page_shows_the_shipped_cpu_numbers(app_page):
    at = app_page("speed")
    shipped = report.shipped_result("cpu")
    shown = {m.label: m.value for m in at.metric}
    case = shipped["default_case"]
    assert shown[f"ours ÷ floor ({case})"] == f"{shipped['ours_vs_frozen']:.3f}×"
    assert shown[f"PEFT ÷ floor ({case})"] == f"{shipped['peft_vs_frozen']:.3f}×"
    assert shown["ours ÷ PEFT"] == f"{shipped['ours_vs_peft']:.3f}×"
    table = at.dataframe[0].value
    assert list(table["case"]) == [c["name"] for c in shipped["cases"]]
    focused = report.shipped_result("cpu_c_attn_r8")
    assert any(f"ours ÷ floor {focused['ours_vs_frozen']:.3f}×" in c.value for c in at.caption)
    gpu = gpu_report.shipped_gpu("bench_compiled")  # the H200's goals table: the shipped medians, as measured
    goals = at.dataframe[1].value
    rows = gpu_report.goal_rows(gpu)
    assert list(goals["case"]) == ["c_attn r=8", "all-linear r=8"] == [r["case"] for r in rows]
    assert list(goals["ours ÷ floor"]) == [round(r["ours ÷ floor"], 3) for r in rows]
    assert list(goals["met"]) == [r["met"] for r in rows]
    parts = at.table[-1].value.to_dict("records")  # every part of every shipped run, as its gpu_check.json says
    assert [(r["run"], r["part of make gpu-check"]) for r in parts] == [
        (name, part) for name, summary in gpu_report.runs() for part in summary["parts"]]
    finetune = at.dataframe[2].value
    assert list(finetune["steps"]) == [r["steps"] for r in gpu_report.shipped_gpu("finetune")["rows"]]
    quoted = at.dataframe[3].value  # the H100 numbers are labelled as measured elsewhere
    assert list(quoted["ms / step"]) == [r["ms"] for r in report.REFERENCE_H100["rows"]]
    assert any("quoted, not measured by LoRA Lab" in m.value for m in at.markdown)


def test_live_button_runs_a_tiny_benchmark(app_page):
    at = app_page("speed")
    batch, seq, repeats = at.number_input
    batch.set_value(1)
    seq.set_value(4)
    repeats.set_value(1)
    at.button[0].click().run()
    assert not at.exception, at.exception
    live = at.session_state["speed:live"]
    assert (live["batch"], live["seq"], live["repeats"]) == (1, 4, 1)
    table = at.dataframe[-1].value
    assert list(table["case"]) == ["frozen (floor)", "ours c_attn r=8", "peft c_attn r=8", "full fine-tuning"]



def test_the_quoted_all_linear_case_counts_its_matmuls_from_the_configuration(app_page):
    at = app_page("speed")
    text = " ".join(m.value for m in at.markdown)
    assert "24 extra thin matmuls" not in text
    assert "its 24 LoRA branches (c_attn, c_proj, c_fc in each of distilgpt2's layers) add 48 thin matmuls" in text


def test_speed_page_scale_section_shows_the_shipped_bytes_on_the_wire(app_page):
    from lora_core.bench import wire

    at = app_page("speed")
    assert not at.exception, at.exception
    shipped = wire.table(wire.shipped())
    shown = next(d.value for d in at.dataframe if "MB all-reduced per step" in d.value.columns)
    assert list(shown["case"]) == [r["case"] for r in shipped]
    assert list(shown["MB all-reduced per step"]) == [round(r["MB all-reduced per step"], 3) for r in shipped]
    assert any(h.value.startswith("4. Scale") for h in at.header)
