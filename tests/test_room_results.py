"""The Room's core (lora_core/serve/room.py): what a finished run puts on the board, a sweep cell as the form's
defaults, the board as points and spreads, the replay and the paper beside it, and the exports."""

import csv
import io
import json

import pytest
from conftest import tiny_gpt2

import lora_core as lc
from lora_core import training, viz
from lora_core.research import record
from lora_core.research.experiments import RANKS
from lora_core.serve import room
from lora_core.serve.board import Board
from lora_core.serve.sweep import SWEEPS, Sweeps
from lora_core.training.live import LiveRun

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished_run():
    tok = lc.models.gpt2_tokenizer()
    model = tiny_gpt2(vocab_size=len(tok), initializer_range=0.2)
    data = training.Dataset.from_pairs([(f"User likes topic {i}.", f"I recommend 'Video {i % 5}'") for i in range(40)])
    cfg = lc.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], use_rslora=True)
    run = LiveRun.start(model, tok, data, cfg, training.TrainConfig(lr=1e-2, steps=7, batch_size=4, seq_len=24, seed=3),
                        eval_limit=4, probe_every=7)
    run.base_name, run.base_precision = "tiny-gpt2", "fp32"
    while run.status == "running":
        run.advance(seconds=0.05)
    return run


def test_a_finished_run_carries_its_knobs_and_measurements(finished_run, tmp_path):
    run = finished_run
    assert room.run_knobs(run) == {"model": "tiny-gpt2", "r": 4, "lora_alpha": 8.0, "scaling": "α/√r",
                                   "targets": "c_attn", "init": "True", "base_precision": "fp32", "lr": 0.01,
                                   "seed": 3}
    got = room.run_metrics(run)
    losses = [h["loss"] for h in run.history]
    assert got["train_loss"] == pytest.approx(sum(losses[-5:]) / 5) and got["steps"] == 7
    assert (got["heldout_loss"], got["bleu"], got["ppl_general"]) == (run.after["heldout_loss"], run.after["bleu"],
                                                                      run.after["ppl_general"])
    seconds = sum(h["seconds"] for h in run.history)
    assert got["wall_s"] == pytest.approx(seconds)
    assert got["tokens_per_s"] == pytest.approx(sum(h["tokens"] for h in run.history) / seconds)
    board = Board(tmp_path)
    entry, key = room.share_run(board, run, "a" * 32, "ada")
    assert entry.run_id == room.board_run_id("a" * 32) != "a" * 32  # the reload id never reaches the board
    with pytest.raises(ValueError, match="already on the board"):
        room.share_run(board, run, "a" * 32, "ada again")
    board.withdraw(entry.id, key)


def test_an_overflowing_perplexity_is_stored_as_unknown_and_withdrawing_twice_is_fine(finished_run, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.setitem(finished_run.after, "ppl_general", float("inf"))
    board = Board(tmp_path)
    entry, key = room.share_run(board, finished_run, "c" * 32, "ada")
    assert entry.metrics["ppl_general"] is None and entry.metrics["bleu"] == finished_run.after["bleu"]
    assert room.board_summary(board.entries(), {entry.id}) == {"results": 1, "nicknames": 1, "yours": 1}
    board.clear()  # the teacher clears the board first
    assert room.withdraw_run(board, entry.id, key) is False  # nothing left to withdraw: not an error
    entry, key = room.share_run(board, finished_run, "c" * 32, "ada")
    with pytest.raises(ValueError, match="key does not match"):
        room.withdraw_run(board, entry.id, "another key")
    assert room.withdraw_run(board, entry.id, key) is True and board.entries() == []


def test_only_a_done_or_stopped_run_is_shared(finished_run, tmp_path, monkeypatch):
    monkeypatch.setattr(finished_run, "status", "diverged")
    with pytest.raises(ValueError, match="status='diverged' cannot be shared"):
        room.share_run(Board(tmp_path), finished_run, "b" * 32, "ada")
    assert not (tmp_path / "board.jsonl").exists()


def test_a_sweep_cell_becomes_the_forms_defaults(tmp_path):
    sweeps, ranks, candidates = Sweeps(tmp_path), [1, 2, 4, 8, 16, 32, 64], ["q_proj", "v_proj", "o_proj"]
    assert room.form_preset(sweeps.assign("a"), candidates, ranks) == {}  # no sweep: the usual defaults
    sweeps.start("rank")
    presets = [room.form_preset(sweeps.assign(s), candidates, ranks) for s in "abcdefg"]
    assert [(p["r"], p["seed"]) for p in presets] == [(r, 0) for r in RANKS] + [(1, 1)]  # the 7th repeats r=1
    assert "gives you r = 1 (seed 1)" in presets[-1]["note"]
    sweeps.start("targets")
    assert room.form_preset(sweeps.assign("x"), candidates, ranks)["target_modules"] == ["q_proj", "v_proj"]
    assert room.form_preset(sweeps.assign("y"), candidates, ranks)["target_modules"] == ["all-linear"]
    gpt2 = room.form_preset(sweeps.assign("z"), ["c_attn", "c_proj"], ranks)  # a model without q_proj
    assert "target_modules" not in gpt2 and "this model has no q_proj, v_proj" in gpt2["note"]
    sweeps.start("scaling")
    assert [room.form_preset(sweeps.assign(s), candidates, ranks)["use_rslora"] for s in "pq"] == [False, True]
    sweeps.start("mine", knob="r", values=[4, 128])
    assert room.form_preset(sweeps.assign("big-1"), candidates, [1, 4])["r"] == 4
    refused = room.form_preset(sweeps.assign("big-2"), candidates, [1, 4])
    assert "r" not in refused and "this server's form offers r in [1, 4]" in refused["note"]
    sweeps.start("alphas", knob="lora_alpha", values=[32, 1e9])
    assert room.form_preset(sweeps.assign("al-1"), candidates, ranks)["lora_alpha"] == 32.0
    assert "the form takes lora_alpha in" in room.form_preset(sweeps.assign("al-2"), candidates, ranks)["note"]


def test_typed_sweep_values_are_checked():
    assert room.parse_values("r", "4, 16") == [4, 16]
    assert room.parse_values("lr", "1e-3, 2e-3") == [0.001, 0.002]
    assert room.parse_values("targets", "q_proj,v_proj; all-linear") == ["q_proj,v_proj", "all-linear"]
    # as LoraConfig stores them (sorted, stripped, once each), so a cell matches the runs made from it
    assert room.parse_values("targets", "v_proj, q_proj; k_proj,q_proj,q_proj") == ["q_proj,v_proj", "k_proj,q_proj"]
    assert lc.LoraConfig(target_modules=["v_proj", "q_proj"]).target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match="values='4, big' is not allowed: r takes numbers"):
        room.parse_values("r", "4, big")
    with pytest.raises(ValueError, match="values='alpha/r, rslora' is not allowed: scaling takes α/r, α/√r"):
        room.parse_values("scaling", "alpha/r, rslora")
    assert room.parse_values("init", "True, pissa") == ["True", "pissa"]
    with pytest.raises(ValueError, match="r takes whole numbers"):
        room.parse_values("r", "4, 2.5")
    assert SWEEPS["scaling"][1] == tuple(room.SCALING.values())  # a scaling cell reads back as a board knob


KNOBS = {"model": "smollm2-135m", "r": 8, "lora_alpha": 16.0, "scaling": "α/r", "targets": "q_proj,v_proj",
         "init": "True", "base_precision": "fp32", "lr": 0.002, "seed": 0}
METRICS = {"train_loss": 1.0, "heldout_loss": 1.5, "bleu": 4.0, "ppl_general": 20.0, "steps": 40,
           "tokens_per_s": 900.0, "wall_s": 40.0}


def _share(board, i, nickname, heldout, **knobs):
    return board.share(f"run-{i}", nickname, {**KNOBS, **knobs}, {**METRICS, "heldout_loss": heldout})[0]


def test_the_board_as_points_and_spreads(tmp_path):
    board = Board(tmp_path)
    mine = _share(board, 1, "<i>me</i>", 1.2, r=4)
    _share(board, 2, "bo", 1.4, r=4, seed=1)
    _share(board, 3, "cy", 1.1, r=16)
    _share(board, 4, "di", 1.0, r=16, lr=0.004)  # another configuration at the same r
    data = room.plot_data(board.entries(), "r", "heldout_loss", own_ids={mine.id})
    assert data["x_order"] == [4, 16] and data["log_x"] and data["lower_is_better"]
    assert [p["own"] for p in data["points"]] == [True, False, False, False]
    spread = {(g["config"], g["x"]): (g["n"], g["mean"], g["min"], g["max"]) for g in data["groups"]}
    assert spread == {("learning rate=0.002", 4): (2, pytest.approx(1.3), 1.2, 1.4),
                      ("learning rate=0.002", 16): (1, 1.1, 1.1, 1.1),
                      ("learning rate=0.004", 16): (1, 1.0, 1.0, 1.0)}
    by_scaling = room.plot_data(board.entries(), "scaling", "bleu", order=["α/√r", "α/r"])
    assert by_scaling["x_order"] == ["α/r"] and not by_scaling["log_x"]
    with pytest.raises(ValueError, match="knob='colour' is not allowed"):
        room.plot_data([], "colour", "bleu")
    with pytest.raises(ValueError, match="metric='speed' is not allowed"):
        room.plot_data([], "r", "speed")
    rows = room.board_rows(board.entries(), {mine.id})
    assert [r["nickname"] for r in rows] == ["di", "cy", "bo", "<i>me</i>"] and rows[-1]["yours"]
    fig = viz.room_board(data, room.reference("r", "heldout_loss"))
    hover = next(t for t in fig.data if t.name == "your run").text[0]
    assert hover.startswith("&lt;i&gt;me&lt;/i&gt;")  # a nickname is text in the hover, never markup
    assert len(fig.layout.annotations) == 3  # this room, the shipped replay, the paper


def test_the_replay_and_the_paper_beside_the_board():
    shipped = record.shipped("rank")
    ref = room.reference("r", "heldout_loss")
    assert ref["replay"]["x"] == list(RANKS)
    assert ref["replay"]["mean"] == [row["test_loss"]["mean"] for row in shipped["results"]["ranks"]]
    assert ref["paper"]["x"][:4] == [1, 2, 4, 8] and ref["paper"]["y"][:3] == [1.23, 1.21, 1.18]  # Table 18
    assert room.reference("r", "bleu")["paper"]["y"][2] == 70.38
    assert room.reference("r", "ppl_general")["paper"] is None
    targets = room.reference("targets", "bleu")
    assert "q_proj,v_proj" in targets["replay"]["x"] and "all-linear" in targets["replay"]["x"]
    assert room.reference("scaling", "heldout_loss") is None and room.reference("r", "steps") is None


def test_exports_hold_every_result(tmp_path):
    board, sweeps = Board(tmp_path), Sweeps(tmp_path)
    sweeps.start("rank")
    _share(board, 1, 'a "quoted", name', 1.2)
    _share(board, 2, "=HYPERLINK(1)", 1.4, targets="all-linear")
    rows = list(csv.DictReader(io.StringIO(room.export_csv(board))))
    assert [r["nickname"] for r in rows] == ['a "quoted", name', "'=HYPERLINK(1)"]  # text, never a formula
    assert rows[1]["targets"] == "all-linear" and float(rows[0]["heldout_loss"]) == 1.2
    exported = json.loads(room.export_json(board, sweeps.current()))
    assert exported["sweep"]["knob"] == "r" and len(exported["results"]) == 2
    assert exported["results"][1]["heldout_loss"] == 1.4
    cells = room.sweep_cells(sweeps.current(), board.entries())
    assert cells[3] == {"cell": 3, "r": 8, "handed out": 0, "results": 2}  # both shared runs are r=8
