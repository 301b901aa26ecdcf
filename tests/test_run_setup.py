"""lora_core.training.run_setup, what the Fine-tuning page runs: a request checked against the server's limits,
then the configs, then the upload; the run labelled with its base; the live and results views."""

import pytest
from conftest import tiny_gpt2

import lora_core as lc
from lora_core.config import ALL_LINEAR
from lora_core.serve.settings import Settings
from lora_core.training import run_setup
from lora_core.training.run_setup import RunRequest


def test_plan_run_checks_limits_then_configs_then_the_file():
    limits = Settings()
    with pytest.raises(ValueError, match=r"seq_len=512 is over this server's limit: at most 256"):
        run_setup.plan_run(RunRequest("distilgpt2-random", seq_len=512, lora_alpha=0.0), limits)  # limits first
    with pytest.raises(ValueError, match=r"lora_alpha=0\.0 is not allowed"):
        run_setup.plan_run(RunRequest("distilgpt2-random", lora_alpha=0.0, data=run_setup.UPLOAD), limits)
    with pytest.raises(ValueError, match=r"data='upload a \.jsonl' needs a file"):
        run_setup.plan_run(RunRequest("distilgpt2-random", data=run_setup.UPLOAD), limits)
    with pytest.raises(ValueError, match=r"upload_bytes=2,000,001 is over this server's limit"):
        run_setup.plan_run(RunRequest("distilgpt2-random", data=run_setup.UPLOAD), limits, b"x" * 2_000_001)
    with pytest.raises(ValueError, match=r"precision='int3' is not allowed: use one of fp32, bf16, nf4"):
        run_setup.plan_run(RunRequest("distilgpt2-random", precision="int3"), limits)
    plan = run_setup.plan_run(RunRequest("distilgpt2-random", target_modules=["c_attn", ALL_LINEAR], steps=3), limits)
    assert plan.lora_config.target_modules == ALL_LINEAR and plan.lora_config.task_type == "CAUSAL_LM"
    assert plan.train_config.steps == 3 and plan.dataset.name == "recommendations"
    pairs = b'{"prompt": "a", "completion": "b"}\n' * 3
    assert run_setup.plan_run(RunRequest("x", data=run_setup.UPLOAD), limits, pairs, "mine.jsonl").dataset.name == \
        "mine.jsonl"


def test_start_run_labels_the_run_with_its_base_and_the_views_read_it():
    tok = lc.models.gpt2_tokenizer()
    model = tiny_gpt2(vocab_size=len(tok))
    request = RunRequest("tiny-gpt2", precision="fp32", r=4, lora_alpha=8, steps=2, batch_size=2, seq_len=24,
                         data=run_setup.UPLOAD)
    short = "".join(f'{{"prompt": "topic {i}", "completion": "video {i % 3}"}}\n' for i in range(20)).encode()
    plan = run_setup.plan_run(request, Settings(), short)       # prompts short enough for 32 positions
    run = run_setup.start_run(plan, model, tok)
    assert (run.base_name, run.base_precision) == ("tiny-gpt2", "fp32")
    assert run.base_bytes == lc.quant.weight_bytes(model) > 0
    view = run_setup.live_view(run)
    assert not view["started"] and view["progress"] == 0 and view["trainable"] == 2 * 4 * (32 + 96)
    assert view["trainable_percent"] == pytest.approx(100 * view["trainable"] / view["total"])
    while run.status == "running":
        run.advance(seconds=5.0)
    view = run_setup.live_view(run)
    assert view["started"] and view["progress"] == 1 and len(view["loss_curve"]) == 2
    results = run_setup.results_view(run)
    assert results["bleu_change"] == pytest.approx(run.after["bleu"] - run.before["bleu"])
    assert results["base_mib"] == pytest.approx(run.base_bytes / 2**20)
    assert run_setup.adapter_label(run) == "tiny-gpt2 r=4 (2 steps)"
    assert run_setup.download_name(run) == "lora-tiny-gpt2-r4.zip"
    assert "PeftModel.from_pretrained" in run_setup.export_snippet(run)


@pytest.mark.parametrize("model,suggested", [("smollm2-135m", "['q_proj', 'v_proj']"),
                                             ("distilgpt2-random", "['c_attn']")])
def test_an_empty_target_list_suggests_the_models_own_modules(model, suggested):
    with pytest.raises(ValueError, match=rf"target_modules=\[\] is not allowed: pick at least one module of {model}, "
                                         rf"e\.g\. {suggested.replace('[', '[[]')}"):
        run_setup.plan_run(RunRequest(model, target_modules=[]), Settings())


def test_the_forms_ranks_stop_at_the_servers_max_r():
    assert run_setup.rank_choices(Settings()) == list(run_setup.R_CHOICES)
    assert run_setup.rank_choices(Settings(max_r=16)) == [1, 2, 4, 8, 16]
