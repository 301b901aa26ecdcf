"""The room's board, sweeps and teacher gate (lora_core/serve): nothing lost under concurrent writers, a restart
keeps everything, a corrupt line is skipped, only the sharer withdraws, cells are handed out fairly, and the
teacher's token cannot be guessed by retrying quickly."""

import json
import multiprocessing
import threading

import pytest

from lora_core.research.experiments import RANKS
from lora_core.serve.board import MAX_NICKNAME, Board, check_nickname
from lora_core.serve.sweep import SWEEPS, Sweeps
from lora_core.serve.teacher import TOKEN_ENV, TeacherGate, teacher_token

KNOBS = {"model": "smollm2-135m", "r": 8, "lora_alpha": 16, "scaling": "alpha/r", "targets": "q_proj,v_proj",
         "init": "default", "base_precision": "fp32", "lr": 0.002}
METRICS = {"train_loss": 1.25, "heldout_loss": 1.5, "bleu": 4.2, "ppl_general": 21.0, "steps": 40,
           "tokens_per_s": 900.0, "wall_s": 45.0}


def share(board: Board, run_id: str, nickname: str = "ada", **metrics):
    return board.share(run_id, nickname, KNOBS, {**METRICS, **metrics})


def test_a_shared_run_is_on_the_board_and_survives_a_restart(tmp_path):
    board = Board(tmp_path)
    entry, key = share(board, "run-1", "<b>ada</b>", heldout_loss=1.4)
    assert [e.id for e in board.entries()] == [entry.id]
    again = Board(tmp_path)  # a new server process on the same folder
    (shown,) = again.entries()
    assert shown == entry and shown.nickname == "<b>ada</b>"  # stored as typed; pages show it as text
    assert shown.metrics["heldout_loss"] == 1.4 and shown.knobs == KNOBS
    again.withdraw(entry.id, key)
    assert Board(tmp_path).entries() == []


def test_only_the_key_from_share_withdraws_and_a_run_is_shared_once(tmp_path):
    board = Board(tmp_path)
    entry, key = share(board, "run-1")
    with pytest.raises(ValueError, match="run_id='run-1' is already on the board"):
        share(board, "run-1", "bob")
    with pytest.raises(ValueError, match="key does not match"):
        board.withdraw(entry.id, "not-the-key")
    with pytest.raises(ValueError, match="entry_id='nope' is not on the board"):
        board.withdraw("nope", key)
    board.withdraw(entry.id, key)
    share(board, "run-1")  # withdrawn, it may be shared again
    assert len(board.entries()) == 1


def test_bad_input_names_the_field(tmp_path):
    board = Board(tmp_path, max_results=2)
    for bad in ("", "   ", "x" * (MAX_NICKNAME + 1), "tab\there", 7):
        with pytest.raises(ValueError, match="nickname="):
            check_nickname(bad)
    with pytest.raises(ValueError, match=r"metrics\['bleu'\]=nan is not allowed"):
        share(board, "run-1", bleu=float("nan"))
    with pytest.raises(ValueError, match="knobs=\\['colour'\\] is not allowed"):
        board.share("run-1", "ada", {"colour": "red"}, METRICS)
    with pytest.raises(ValueError, match="max_results=0 is not allowed"):
        Board(tmp_path, max_results=0)
    share(board, "a")
    share(board, "b")
    with pytest.raises(ValueError, match="holds its limit of 2 results"):
        share(board, "c")
    assert board.clear() == 2 and board.entries() == []


def test_a_corrupt_or_torn_line_is_skipped_with_a_warning(tmp_path):
    board = Board(tmp_path)
    first, _ = share(board, "run-1")
    with open(board.path, "ab") as f:
        f.write(b"not json\n" + b'{"share": 3}\n' + b"\xff\xfe\n")
    with pytest.warns(UserWarning, match="line 2 is not a board event"):  # sharing reads the log too
        second, _ = share(board, "run-2")
    with open(board.path, "ab") as f:
        f.write(b'{"share": {"id": "half')  # a server killed mid-write
    with pytest.warns(UserWarning, match="is not a board event and was skipped") as caught:
        assert [e.id for e in board.entries()] == [first.id, second.id]
    assert len(caught) == 4
    with pytest.warns(UserWarning):
        third, _ = share(board, "run-3")  # after a torn last line: a line of its own, which parses
        assert [e.id for e in board.entries()] == [first.id, second.id, third.id]
    wrong_shape = {"id": ["a list"], "time": "noon", "run_id": "x", "nickname": "x", "knobs": {}, "metrics": {},
                   "key_sha256": "0"}
    with open(board.path, "a") as f:
        f.write(json.dumps({"share": wrong_shape}) + "\n")  # parses, but is no record share() writes
    with pytest.warns(UserWarning, match="line 8 is not a board event"):
        assert len(board.entries()) == 3


def test_withdrawing_and_clearing_take_the_results_off_the_disk(tmp_path):
    board = Board(tmp_path)
    kept, _ = share(board, "run-1", "kept")
    gone, key = share(board, "run-2", "withdrawn-name")
    board.withdraw(gone.id, key)
    text = board.path.read_text()
    assert "withdrawn-name" not in text and len(text.splitlines()) == 1 and kept.id in text
    assert board.clear() == 1 and board.path.read_text() == "" and board.entries() == []


def _share_many(folder, worker: int, n: int) -> None:
    board = Board(folder)
    for i in range(n):
        share(board, f"w{worker}-run{i}", f"learner {worker}")


def test_concurrent_writers_never_lose_or_tear_a_line(tmp_path):
    # 4 processes (forked before any thread starts: forking a threaded process can copy a held lock) and 8
    # threads of this one, all sharing at once
    processes = [multiprocessing.get_context("fork").Process(target=_share_many, args=(tmp_path, 100 + w, 25))
                 for w in range(4)]
    for p in processes:
        p.start()
    threads = [threading.Thread(target=_share_many, args=(tmp_path, w, 25)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for p in processes:
        p.join(timeout=120)
        if p.exitcode is None:
            p.kill()
        assert p.exitcode == 0
    lines = (tmp_path / "board.jsonl").read_bytes().splitlines()
    assert len(lines) == 12 * 25 and all("share" in json.loads(line) for line in lines)  # every line whole
    runs = {e.run_id for e in Board(tmp_path).entries()}
    assert runs == {f"w{w}-run{i}" for w in [*range(8), *range(100, 104)] for i in range(25)}


def test_a_sweep_hands_out_every_cell_before_repeating_one(tmp_path):
    sweeps = Sweeps(tmp_path)
    assert sweeps.assign("a") is None  # no sweep running
    sweeps.start("two ranks", knob="r", values=[4, 16])
    cells = [sweeps.assign(s)["value"] for s in "abcde"]
    assert cells == [4, 16, 4, 16, 4]
    assert sweeps.assign("b")["value"] == 16  # a session keeps its cell
    assert Sweeps(tmp_path).current()["taken"] == [3, 2]  # a restart keeps the state
    sweeps.end()
    assert sweeps.current() is None and sweeps.assign("f") is None


def test_concurrent_sessions_fill_the_grid_evenly(tmp_path):
    sweeps = Sweeps(tmp_path)
    sweeps.start("targets")
    threads = [threading.Thread(target=sweeps.assign, args=(f"s{i}",)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sweeps.current()["taken"] == [6, 6]


def test_sweep_presets_and_bad_sweeps(tmp_path):
    assert SWEEPS["rank"] == ("r", RANKS)  # the research replays' rank sweep
    sweeps = Sweeps(tmp_path)
    assert sweeps.start("rank")["values"] == list(RANKS)
    with pytest.raises(ValueError, match="name='depth' is not a preset sweep"):
        sweeps.start("depth")
    with pytest.raises(ValueError, match="knob='colour' is not allowed"):
        sweeps.start("mine", knob="colour", values=[1, 2])
    with pytest.raises(ValueError, match="give 2 to 32 different values"):
        sweeps.start("mine", knob="r", values=[8, 8])


def test_a_sweep_file_of_the_wrong_shape_is_no_sweep_and_an_unwritable_folder_is_a_setting(tmp_path):
    sweeps = Sweeps(tmp_path)
    sweeps.start("rank")
    for broken in ({"knob": "r", "values": [1, 2], "assigned": {"old-format": 0}, "id": "x", "name": "n",
                    "started": 0}, {"knob": "colour", "values": [1, 2], "assigned": {}}, [1, 2], "not json"):
        (tmp_path / "sweep.json").write_text(broken if isinstance(broken, str) else json.dumps(broken))
        with pytest.warns(UserWarning, match="is not a sweep LoRA Lab wrote"):
            assert sweeps.assign("a") is None and sweeps.current() is None
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"board_dir=.* cannot be written"):
        Sweeps(blocker / "room").start("rank")


def test_wrong_tries_slow_their_own_address_and_never_lock_the_teacher_out():
    now = [0.0]
    gate = TeacherGate("s3cret", clock=lambda: now[0], max_clients=3)
    for _ in range(3):
        with pytest.raises(ValueError, match="that is not it"):
            gate.check("guess", client="10.0.0.9")
        now[0] += 0.5
        with pytest.raises(ValueError, match="too soon"):
            gate.check("guess", client="10.0.0.9")  # a reload or a new tab: the same address, the same wait
        now[0] += 60
    gate.check(" s3cret ", client="10.0.0.2")  # the teacher's machine: not slowed; a pasted space is fine
    for client in ("a", "b", "c", "d"):
        with pytest.raises(ValueError):
            gate.check("x", client=client)
    assert len(gate._failures) == 3 and "10.0.0.9" not in gate._failures  # bounded: the longest-quiet goes


def test_the_teacher_gate_refuses_without_a_token_and_slows_every_wrong_try(monkeypatch):
    with pytest.raises(ValueError, match="teacher controls are off"):
        TeacherGate("").check("anything")
    now = [100.0]
    gate = TeacherGate("s3cret", clock=lambda: now[0])
    gate.check("s3cret")
    with pytest.raises(ValueError, match="next try is heard in 1 s"):
        gate.check("guess")
    with pytest.raises(ValueError, match="too soon"):
        gate.check("s3cret")  # even the right token waits out the pause
    now[0] += 1.0
    with pytest.raises(ValueError, match="in 2 s"):
        gate.check("guess 2")
    now[0] += 2.0
    with pytest.raises(ValueError, match="in 4 s"):
        gate.check("guess 3")
    now[0] += 4.0
    gate.check("s3cret")  # right: the wait resets
    with pytest.raises(ValueError, match="in 1 s"):
        gate.check("guess 4")
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert teacher_token("from-file") == "from-env"
    monkeypatch.delenv(TOKEN_ENV)
    assert teacher_token("from-file") == "from-file" and teacher_token() == ""


def test_a_folder_the_server_cannot_write_is_a_setting_to_fix(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    board = Board(blocker / "room")
    assert board.entries() == []  # nothing written yet: an empty board, no folder made
    with pytest.raises(ValueError, match=r"board_dir='.*a-file/room' cannot be written .*board_dir in lora_lab.toml"):
        share(board, "run-1")


def test_the_room_settings_and_their_checks(tmp_path):
    from lora_core.serve.settings import Settings, load_settings

    (tmp_path / "s.toml").write_text('[room]\nboard_dir = "board"\nmax_board_results = 5\nteacher_token = ""\n')
    s = load_settings(tmp_path / "s.toml")
    assert s.board_path == (tmp_path / "board").resolve() and s.max_board_results == 5 and s.teacher_token == ""
    assert Settings().board_path.name == "room"  # the default: room/ beside the shipped lora_lab.toml
    for bad, message in (("max_board_results = 0", "max_board_results=0 .* use a whole number >= 1"),
                         ("teacher_token = 7", "teacher_token=7 .* use a string in quotes"),
                         ("board_dir = ''", "board_dir='' .* use a non-empty string")):
        (tmp_path / "bad.toml").write_text(f"[room]\n{bad}\n")
        with pytest.raises(ValueError, match=message):
            load_settings(tmp_path / "bad.toml")
