"""LiveRun (the Fine-tuning page's engine), merge_report and the zipped adapter, on tiny models."""

import io
import time
import zipfile

import pytest
import torch
from conftest import tiny_gpt2
from peft import PeftModel

import lora_core as lc
from lora_core import training
from lora_core.teach import merge_check
from lora_core.training.live import LiveRun

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny matmuls on one thread


@pytest.fixture
def setup():
    tok = lc.models.gpt2_tokenizer()
    # std 0.02 barely trains in a few steps; a larger init learns visibly
    model = tiny_gpt2(vocab_size=len(tok), initializer_range=0.2)
    data = training.Dataset.from_pairs([(f"User likes topic {i}.", f"I recommend 'Video {i % 5}'") for i in range(40)])
    return model, tok, data


def _start(setup, **kw):
    model, tok, data = setup
    cfg = lc.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"])
    train = training.TrainConfig(lr=kw.pop("lr", 1e-2), steps=kw.pop("steps", 6), batch_size=4, seq_len=24)
    return LiveRun.start(model, tok, data, cfg, train, eval_limit=4, probe_every=2, **kw)


def test_a_run_trains_a_private_copy_and_measures_before_and_after(setup):
    base = setup[0]
    snapshot = {n: p.detach().clone() for n, p in base.named_parameters()}
    run = _start(setup)
    assert run.before["bleu"] >= 0 and "ppl_general" in run.before and run.probes[0]["step"] == 0
    while run.status == "running":
        run.advance(seconds=0.05)
    assert run.status == "done" and run.step == 6 and run.after
    assert run.history[-1]["loss"] < run.history[0]["loss"]
    assert [p["step"] for p in run.probes] == [0, 2, 4, 6]
    assert all(torch.equal(p, snapshot[n]) for n, p in base.named_parameters())   # the base is untouched
    assert not lc.lora_layers(base)


def test_pause_and_resume_continue_the_same_run(setup):
    straight = _start(setup)
    while straight.status == "running":
        straight.advance(seconds=0.0)
    paused = _start(setup)
    paused.advance(seconds=0.0)
    paused.pause()
    assert paused.advance() == [] and paused.status == "paused"
    torch.randn(100)  # other code using the global RNG must not change the run
    paused.resume()
    while paused.status == "running":
        paused.advance(seconds=0.0)
    assert [h["loss"] for h in paused.history] == [h["loss"] for h in straight.history]


def test_stop_keeps_the_adapter_and_divergence_is_reported(setup):
    run = _start(setup)
    run.advance(seconds=0.0)
    run.finish("stopped")
    assert run.status == "stopped" and run.after and run.step == 1
    wild = _start(setup, steps=20)
    wild.advance(seconds=0.0)
    _, layer = lc.lora_layers(wild.model)[0]
    with torch.no_grad():
        layer.adapter().B.fill_(float("inf"))  # what a runaway learning rate ends in
    while wild.status == "running":
        wild.advance(seconds=0.0)
    assert wild.status == "diverged" and "restored" in wild.message and wild.step == 1
    assert torch.isfinite(layer.adapter().B).all()                 # the last good adapter is back


def test_merge_report_and_zip_export_round_trip_through_peft(setup, tmp_path):
    run = _start(setup)
    while run.status == "running":
        run.advance(seconds=0.0)
    rep = merge_check.merge_report(run.model, run.tokenizer, run.sample_prompts, max_new_tokens=4, repeats=1)
    assert rep["max_abs_dlogit"] < 1e-4 and rep["same_generations"]
    assert not any(layer.merged for _, layer in lc.lora_layers(run.model))   # left as it was
    rows = lc.spectrum.adapter_report(run.model)
    assert len(rows) == 2 and all(0 < row["relative"] < 10 for row in rows)
    zipfile.ZipFile(io.BytesIO(lc.adapter_zip(run.model))).extractall(tmp_path)
    base = setup[0]
    theirs = PeftModel.from_pretrained(base, tmp_path).eval()
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, run.model(ids).logits, rtol=1e-5, atol=1e-5)


def test_a_run_never_moves_the_global_rng_and_its_seed_fixes_the_adapter(setup):
    def adapter(run):
        return {n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad}

    state = torch.get_rng_state()
    one, two, other = _start(setup, seed=7), _start(setup, seed=7), _start(setup, seed=8)
    for run in (one, two, other):
        run.advance(seconds=0.0)                                   # a training step, dropout included
    assert torch.equal(torch.get_rng_state(), state)               # start, probes and steps: none moved it
    a, b, c = adapter(one), adapter(two), adapter(other)
    assert all(torch.equal(t, b[n]) for n, t in a.items())         # same seed, same adapter
    assert any(not torch.equal(t, c[n]) for n, t in a.items())


def test_a_diverged_run_is_measured_like_a_stopped_one():
    tok = lc.models.gpt2_tokenizer()
    model = tiny_gpt2(vocab_size=len(tok))                       # the usual std 0.02 init
    data = training.Dataset.from_pairs([(f"User likes topic {i}.", f"I recommend 'Video {i % 5}'") for i in range(20)])
    run = LiveRun.start(model, tok, data, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]),
                        training.TrainConfig(steps=6, batch_size=4, seq_len=24), eval_limit=2, probe_every=2)
    run.advance(seconds=0.0)
    _, layer = lc.lora_layers(run.model)[0]
    with torch.no_grad():
        layer.adapter().B.fill_(float("inf"))                  # what a runaway learning rate ends in
    run.advance(seconds=0.0)
    assert run.status == "diverged" and "restored" in run.message
    assert {"ppl_general", "bleu", "heldout_loss"} <= set(run.after)  # the page's results section needs these
    assert torch.isfinite(layer.adapter().B).all()


def _adapter(run) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad}


def test_two_threads_advancing_one_run_give_one_threads_weights(setup):
    """A page's timer tick and a full rerun both call advance(): exactly one of them steps."""
    import threading
    alone = _start(setup, steps=8)
    while alone.status == "running":
        alone.advance(seconds=0.0)
    shared = _start(setup, steps=8)
    errors, barrier = [], threading.Barrier(2)

    def hammer():
        barrier.wait()
        try:
            while shared.status == "running":
                shared.advance(seconds=0.01)
                # A caller that lost the race returns at once; spinning on it without a pause would hold the GIL
                # against the stepping thread's every op (a loaded CI box once took > 240 s for 8 tiny steps).
                time.sleep(0.001)
        except Exception as err:  # the bug this guards: "modified by an inplace operation"
            errors.append(err)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert shared.status == "done" and shared.step == 8 and [h["step"] for h in shared.history] == list(range(1, 9))
    ours, theirs = _adapter(shared), _adapter(alone)
    assert all(torch.equal(ours[n], theirs[n]) for n in theirs)
    assert shared.after["heldout_loss"] == alone.after["heldout_loss"]


def test_an_aborted_step_leaves_no_gradients_and_the_next_step_is_the_same(setup, monkeypatch):
    straight = _start(setup, steps=3)
    for _ in range(3):
        straight.trainer.step()
    run = _start(setup, steps=3)
    run.trainer.step()
    before = _adapter(run)
    real = run.trainer.model.forward

    def fail_mid_step(*args, **kwargs):
        out = real(*args, **kwargs)
        out.logits.sum().backward(retain_graph=True)  # some gradient lands, then the step dies
        raise KeyboardInterrupt("the page reran mid-step")

    monkeypatch.setattr(run.trainer.model, "forward", fail_mid_step)
    with pytest.raises(KeyboardInterrupt):
        run.trainer.step()
    monkeypatch.undo()
    assert all(p.grad is None for p in run.trainer.params)
    after = _adapter(run)
    assert all(torch.equal(after[n], before[n]) for n in before) and run.step == 1
    run.trainer.step()
    run.trainer.step()
    ours, theirs = _adapter(run), _adapter(straight)
    assert all(torch.equal(ours[n], theirs[n]) for n in theirs)


def _wait_until(condition, worker, timeout: float = 120.0) -> None:
    """Poll `condition` while `worker` steps. Sleeping between polls hands the GIL to the worker: a bare `pass`
    loop starved it (one torch op per 5 ms switch interval), so a step could outlast the worker's time box and the
    loop spun forever."""
    import time
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.is_alive(), "the worker's advance() returned before the condition held"
        assert time.monotonic() < deadline, f"the condition did not hold within {timeout:g} s"
        time.sleep(0.001)


def test_finish_waits_for_a_step_in_progress_and_pause_stops_the_time_box(setup):
    import threading
    run = _start(setup, steps=500)
    worker = threading.Thread(target=run.advance, kwargs={"seconds": 30.0})
    worker.start()
    _wait_until(lambda: run.step >= 3, worker)                # 3: no probe after it, so the next step starts now
    run.pause()
    paused_at = run.step                                      # pause waited for the step in progress
    worker.join(timeout=60)
    assert not worker.is_alive() and run.status == "paused"  # pause ended the 30 s box after one step
    assert run.step == paused_at
    assert run.advance(seconds=1.0) == [] and run.step == paused_at
    run.resume()
    worker = threading.Thread(target=run.advance, kwargs={"seconds": 30.0})
    worker.start()
    _wait_until(lambda: run.step > paused_at, worker)
    run.finish("stopped")           # waits for the stepper, then measures once
    worker.join(timeout=60)
    assert run.status == "stopped" and run.after and run.advance(1.0) == []
    assert run.probes[-1]["step"] == run.step


def test_a_diverged_runs_message_speaks_to_a_learner_not_a_script(setup):
    wild = _start(setup, steps=4)
    layer = lc.lora_layers(wild.model)[0][1]
    with torch.no_grad():
        layer.adapter().B.fill_(float("inf"))
    while wild.status == "running":
        wild.advance(seconds=0.0)
    assert wild.message.startswith("Training diverged: the loss became nan at step 1 (learning rate")
    assert "Trainer" not in wild.message and "max_grad_norm" not in wild.message
