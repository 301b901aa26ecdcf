"""The speed benchmark (lora_core.bench): it runs end to end, its floor really runs a backward, its report
reads the shipped results and the quoted H100 rows, and its CUDA-graph step trains like the eager one.
No timing is ever asserted. The fast paths it measures are pinned to the plain formula in test_fused.py."""

import json
import math
import statistics

import pytest
import torch
from conftest import tiny_gpt2_config

import lora_core as lc
from lora_core.bench import cli, report, run, step

TINY = tiny_gpt2_config()  # the benchmark builds its models from a config
QUICK = dict(batch=2, seq=8, repeats=2, warmup=1, threads=1)


def test_bench_runs_end_to_end_and_gives_the_json_keys():
    cfg = run.BenchConfig(targets=("c_attn", "all-linear"), ranks=(8, 4), runs=2, **QUICK)
    result = json.loads(json.dumps(run.run_benchmark(cfg, TINY)))  # JSON-ready as it is
    for key in ("ours_vs_frozen", "peft_vs_frozen", "ours_vs_peft", "full_vs_frozen", "cases", "device",
                "device_name", "dtype", "batch", "seq", "torch", "peak_memory", "ratios_per_run", "runs"):
        assert key in result, key
    assert (result["device"], result["dtype"], result["batch"], result["seq"]) == ("cpu", "fp32", 2, 8)
    assert result["torch"] == torch.__version__ and result["peak_memory"] is False
    names = [c["name"] for c in result["cases"]]
    assert names[0] == "frozen (floor)" and names[-1] == "full fine-tuning"
    assert len(names) == 2 + 2 * 2 * 2                     # floor, full, {ours, peft} × 2 targets × 2 ranks
    for key in ("ours_vs_frozen", "peft_vs_frozen", "ours_vs_peft"):
        assert len(result["ratios_per_run"][key]) == 2
        assert result[key] > 0 and math.isfinite(result[key])
    cases = {c["name"]: c for c in result["cases"]}
    assert cases["frozen (floor)"]["trainable"] == 0 and cases["frozen (floor)"]["vs_frozen"]["eager"] == 1.0
    for targets in ("c_attn", "all-linear"):
        for r in (8, 4):  # lora_core and PEFT train the same number of parameters
            assert cases[f"ours {targets} r={r}"]["trainable"] == cases[f"peft {targets} r={r}"]["trainable"] > 0
    full = cases["full fine-tuning"]
    assert full["trainable"] == sum(p.numel() for p in run.random_model(TINY).parameters())
    assert full["state_bytes"] == 2 * 4 * full["trainable"]  # AdamW: two fp32 moments per weight
    assert all(len(c["ms_runs"]["eager"]) == 2 for c in result["cases"])
    table = report.format_table(result)
    assert "vs floor" in table and "full fine-tuning" in table


def test_bench_command_line_prints_one_json_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", **TINY.to_diff_dict()}))
    cli.main(["--model", str(tmp_path), "--json", "--batch", "1", "--seq", "4", "--repeats", "1", "--warmup", "0",
                "--targets", "c_attn", "--ranks", "8", "--threads", "1", "--variants", "frozen", "ours"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    result = json.loads(out[0])
    assert [c["variant"] for c in result["cases"]] == ["frozen", "ours"]
    assert result["peft_vs_frozen"] is None and result["ours_vs_frozen"] > 0


def test_floor_really_runs_a_backward():
    floor = lc.shared_base_copy(run.random_model(TINY))
    floor.get_input_embeddings().register_forward_hook(run._require_grad_on_output)
    seen = []
    floor.get_input_embeddings().register_forward_hook(lambda m, i, o: seen.append(o))  # sees the hook's output
    step.train_step(floor, None, torch.zeros(1, 4, dtype=torch.long))
    assert seen[0].grad is not None and float(seen[0].grad.abs().sum()) > 0  # the backward reached the bottom
    assert all(p.grad is None for p in floor.parameters())                    # and no weight got a gradient


@pytest.mark.parametrize("bad", [dict(dtype="fp16"), dict(batch=0), dict(targets=("q_proj",)),
                                 dict(variants=("ours",)), dict(threads=0)],
                         ids=["dtype=fp16", "batch=0", "targets=q_proj", "variants-without-frozen", "threads=0"])
def test_bench_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="is not allowed"):
        run.BenchConfig(**bad)


def test_shipped_cpu_result_has_the_headline_keys():
    result = report.shipped_result("cpu")
    assert result is not None and result["device"] == "cpu"
    assert {"ours_vs_frozen", "peft_vs_frozen", "ours_vs_peft", "cases"} <= result.keys()
    assert report.shipped_result("no-such-machine") is None
    ref = {(r["case"], r["mode"]): r["vs_frozen"] for r in report.reference_rows()}
    assert ref["frozen (floor)", "compiled"] == 1.0 and ref["full fine-tuning", "compiled"] == pytest.approx(12.7 / 7.3)


# --- CUDA graphs: GPU only ----------------------------------------------------------------------------------
def test_cuda_graph_step_refuses_cpu_tensors():
    model = run.random_model(TINY)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        step.cuda_graph_step(model, opt, torch.zeros(1, 4, dtype=torch.long))


def test_a_graph_twin_shares_the_frozen_weights_and_owns_the_trainable_ones():
    model = run.random_model(TINY)
    lc.inject_lora(model, lc.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"]))
    twin = step.graph_twin(model)
    pairs = list(zip(model.named_parameters(), twin.named_parameters(), strict=True))
    assert all(a is b for (_, a), (_, b) in pairs if not a.requires_grad)
    trainable = [(n, a, b) for (n, a), (_, b) in pairs if a.requires_grad]
    assert trainable and all(a is not b and a.data_ptr() != b.data_ptr() and torch.equal(a, b) for _, a, b in trainable)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_step_trains_like_the_eager_step():
    cfg = tiny_gpt2_config(dropout=0.0)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0)).cuda()
    models = []
    for _ in range(2):
        model = run.random_model(cfg, "cuda")
        torch.manual_seed(1)  # the same random factors in both
        lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False))
        models.append(model)
    eager, graphed = models
    opt_eager = torch.optim.AdamW([p for p in eager.parameters() if p.requires_grad], lr=1e-2, capturable=True)
    opt_graph = torch.optim.AdamW([p for p in graphed.parameters() if p.requires_grad], lr=1e-2, capturable=True)
    replay = step.cuda_graph_step(graphed, opt_graph, ids, warmup=3)  # 3 real steps, then capture
    for _ in range(3):
        replay()
    for _ in range(6):
        step.train_step(eager, opt_eager, ids)
    torch.cuda.synchronize()
    for (name, p), q in zip(eager.named_parameters(), graphed.parameters(), strict=True):
        if p.requires_grad:
            torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)


def test_the_floor_is_the_fastest_frozen_step_and_peft_is_timed_eager():
    def case(name, variant, targets=None, r=None, **ms_runs):
        c = run.Case(name, variant, targets, r)
        c.ms_runs = ms_runs
        c.ms = {m: sorted(v)[len(v) // 2] for m, v in ms_runs.items()}
        return c

    cases = [case("frozen (floor)", "frozen", eager=[100.0, 110.0], compiled=[80.0, 90.0]),
             case("ours c_attn r=8", "ours", "c_attn", 8, eager=[101.0, 111.0], compiled=[82.0, 90.0]),
             case("peft c_attn r=8", "peft", "c_attn", 8, eager=[120.0, 132.0], compiled=[81.0, 91.0]),
             case("full fine-tuning", "full", eager=[160.0, 176.0])]
    headline, floor_mode, ours_mode = report.floor_ratios(cases, runs=2)
    assert (floor_mode, ours_mode) == ("compiled", "compiled")
    assert headline["ours_vs_frozen"] == pytest.approx([82 / 80, 90 / 90])        # against the compiled floor
    assert headline["peft_vs_frozen"] == pytest.approx([120 / 80, 132 / 90])      # PEFT eager, as users run it
    assert headline["ours_vs_peft"] == pytest.approx([82 / 120, 90 / 132])
    assert headline["ours_eager_vs_frozen_eager"] == pytest.approx([101 / 100, 111 / 110])
    assert cases[3].vs_floor["eager"] == pytest.approx((160 / 80 + 176 / 90) / 2)  # median of two runs
    assert cases[1].vs_frozen["compiled"] == pytest.approx((82 / 80 + 1.0) / 2)    # same-mode ratio kept too


def test_markdown_table_has_one_row_per_case(tmp_path, capsys):
    result = report.shipped_result("cpu")
    table = report.markdown_table(result).splitlines()
    assert table[0].startswith("| case | trainable | eager ms | eager × floor")
    assert len(table) == 2 + len(result["cases"])
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    assert cli.main(["--markdown", str(path)]) == 0
    assert capsys.readouterr().out.strip().splitlines() == table


def test_the_quoted_h100_highlights_come_from_the_reference_rows():
    quoted = report.reference_highlights()
    assert quoted["peft_eager_overhead"] == pytest.approx(20.7 / 18.1 - 1)
    assert quoted["hand_compiled_overhead"] == pytest.approx(7.7 / 7.3 - 1)
    assert (quoted["all_linear_compiled_ms"], quoted["full_compiled_ms"]) == (13.0, 12.7)
    assert report.modes_in(report.shipped_result("cpu"))[0] == "eager"


def test_the_live_benchmark_checks_its_inputs_before_starting_a_process():
    with pytest.raises(ValueError, match="is not allowed"):
        cli.live_benchmark(batch=0)


# --- DoRA and two adapters (issue 14): ours and PEFT's same variant, against the floor, in one run -----------------
ADAPTERS = ("lora", "dora", "two-adapters")


def test_each_adapter_is_compared_with_ratios_from_the_run_s_own_numbers():
    cfg = run.BenchConfig(targets=("c_attn",), ranks=(4,), runs=2, variants=("frozen", "ours", "peft"),
                          adapters=ADAPTERS, **QUICK)
    result = json.loads(json.dumps(run.run_benchmark(cfg, TINY)))
    cases = {c["name"]: c for c in result["cases"]}
    assert list(cases) == ["frozen (floor)", "ours c_attn r=4", "peft c_attn r=4", "ours dora c_attn r=4",
                           "peft dora c_attn r=4", "ours two-adapters c_attn r=4", "peft two-adapters c_attn r=4"]
    floor = cases["frozen (floor)"]["ms_runs"]["eager"]  # eager only: the floor is the eager frozen step
    rows = {row["adapter"]: row for row in result["comparisons"]}
    assert list(rows) == list(ADAPTERS)
    for adapter, row in rows.items():
        ours = cases[row["ours_case"]]["ms_runs"]["eager"]
        peft = cases[row["peft_case"]]["ms_runs"]["eager"]
        want = {"ours_vs_floor": [o / f for o, f in zip(ours, floor, strict=True)],
                "peft_vs_floor": [p / f for p, f in zip(peft, floor, strict=True)],
                "ours_vs_peft": [o / p for o, p in zip(ours, peft, strict=True)]}
        for key, per_run in want.items():
            assert row["per_run"][key] == pytest.approx(per_run), (adapter, key)
            assert row[key] == pytest.approx(statistics.median(per_run)), (adapter, key)
        assert (row["targets"], row["r"]) == ("c_attn", 4)
        assert row["ours_trainable"] == row["peft_trainable"] > 0          # the same parameters train
        assert row["ours_saved_bytes"] > 0 and row["peft_saved_bytes"] > 0
        assert row["ours_train_state_bytes"] == 3 * 4 * row["ours_trainable"]  # fp32 grad + two AdamW moments
    lora = rows["lora"]["ours_trainable"]
    c_attn_out = 2 * 3 * TINY.n_embd                                        # one magnitude per output, 2 layers
    assert rows["dora"]["ours_trainable"] == lora + c_attn_out
    assert rows["two-adapters"]["ours_trainable"] == 2 * lora
    # the headline stays plain LoRA's (default case c_attn r=8, not run here), and the readers show every adapter
    assert result["ours_vs_frozen"] is None
    assert report.format_table(result).count("PEFT (eager) vs floor") == 1 + len(ADAPTERS)
    table = report.comparison_markdown(result).splitlines()
    assert len(table) == 2 + len(ADAPTERS) and table[2].startswith("| lora c_attn r=4 | ")


def test_adapter_ratios_take_our_fastest_step_and_peft_eager_against_each_run_s_floor():
    def case(name, variant, adapter=None, **ms_runs):
        c = run.Case(name, variant, "c_attn" if adapter else None, 8 if adapter else None, adapter)
        c.ms_runs, c.ms = ms_runs, {m: v[0] for m, v in ms_runs.items()}
        c.trainable, c.grad_bytes, c.state_bytes, c.saved_bytes = 10, 40, 80, 1000
        return c

    cases = [case("frozen (floor)", "frozen", eager=[100.0, 110.0], compiled=[80.0, 90.0]),
             case("ours c_attn r=8", "ours", "lora", eager=[101.0, 111.0], compiled=[82.0, 90.0]),
             case("peft c_attn r=8", "peft", "lora", eager=[120.0, 132.0], compiled=[70.0, 70.0]),
             case("ours dora c_attn r=8", "ours", "dora", eager=[150.0, 160.0]),
             case("peft dora c_attn r=8", "peft", "dora", eager=[200.0, 180.0])]
    rows = {r["adapter"]: r for r in report.adapter_ratios(cases, runs=2)}
    assert rows["lora"]["per_run"]["ours_vs_floor"] == pytest.approx([82 / 80, 90 / 90])
    assert rows["lora"]["per_run"]["peft_vs_floor"] == pytest.approx([120 / 80, 132 / 90])  # eager, not compiled
    assert rows["dora"]["per_run"]["ours_vs_peft"] == pytest.approx([150 / 200, 160 / 180])
    assert rows["dora"]["ours_vs_floor"] == pytest.approx((150 / 80 + 160 / 90) / 2)        # median of two runs
    assert rows["dora"]["ours_train_state_bytes"] == 120 and rows["dora"]["peft_saved_bytes"] == 1000
    headline, _, _ = report.floor_ratios(cases, runs=2)                                     # still plain LoRA's
    assert headline["ours_vs_peft"] == pytest.approx([82 / 120, 90 / 132])


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_timed_steps_compute_peft_s_losses(adapter):
    """What is timed is the same computation: the bench's own ours and PEFT models, our (non-zero) factors loaded
    into PEFT's, give the same loss step after step, so AdamW moved both adapters (and DoRA's magnitude) alike."""
    cfg = run.BenchConfig(targets=("c_attn",), ranks=(4,), variants=("frozen", "ours", "peft"), adapters=(adapter,),
                          lr=1e-2, **QUICK)
    base = run.random_model(tiny_gpt2_config(dropout=0.0))  # train mode as timed, with nothing random in it
    runners = {r.case.variant: r for r in run._build(cfg, base)}
    ours, theirs = runners["ours"], runners["peft"]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in ours.model.named_parameters():
            if ".lora_B." in name:  # B = 0 at init would make every adapter the base model at step 1
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    theirs.model.base_model.model.load_state_dict(ours.model.state_dict(), strict=True)  # the same keys, all of them
    trainable = lambda m: {n.removeprefix("base_model.model.") for n, p in m.named_parameters() if p.requires_grad}
    assert trainable(ours.model) == trainable(theirs.model)
    if adapter == "two-adapters":
        assert lc.active_adapters(ours.model) == ["first", "second"]
        assert theirs.model.base_model.active_adapters == ["first", "second"]
    ids = torch.randint(0, TINY.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    for k in range(3):
        got = step.train_step(ours.model, ours.optimizer, ids)
        want = step.train_step(theirs.model, theirs.optimizer, ids)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"step {k}: {m}")


def test_speed_page_shows_the_shipped_adapter_comparison(app_page):
    shipped = report.shipped_result("cpu_variants")
    assert {c["adapter"] for c in shipped["comparisons"]} == set(ADAPTERS)
    at = app_page("speed")
    table = at.table[0].value
    rows = report.comparison_rows(shipped)
    assert list(table["variant"]) == [r["variant"] for r in rows]
    assert list(table["ours × PEFT"]) == [round(r["ours × PEFT"], 3) for r in rows]
    assert any(shipped["provenance"]["command"] in c.value for c in at.caption)
