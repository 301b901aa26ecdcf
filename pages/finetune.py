"""Live fine-tuning: train a real model with LoRA, watch it learn, then merge, compare and export."""

import streamlit as st

import lora_core as lc
from lora_core import viz
from lora_core.live import LiveRun
from pages.common import base_model, base_variant, last_good, session_id, settings, show_unexpected, training_slots

st.title("Live fine-tuning")
st.markdown("Pick a configuration, press **Start**, and watch a real pretrained model learn the "
            "recommendation task: *\"User likes cooking videos.\"* → *\"I recommend 'Pasta Tutorial'\"*. "
            "Only the completion tokens are learned (the prompt and the padding are masked out of the loss). "
            "Held-out prompts ask about interests that never occur in training.")

RUN = "finetune:run"
CHOICES = ["smollm2-135m", "distilgpt2", "distilgpt2-random"]


@st.cache_data(ttl=60, show_spinner=False)
def sources() -> dict[str, lc.ModelSource]:
    return {name: lc.source_info(name) for name in CHOICES}


@st.cache_data(show_spinner=False)
def module_names(model_name: str) -> list[str]:
    model, _ = base_model(model_name)
    return lc.candidate_modules(model)


@st.cache_resource(show_spinner=False)
def shipped_dataset(name: str) -> lc.Dataset:
    return lc.load_dataset(name)


# --- 1. configuration ------------------------------------------------------------------------------
st.header("1. Configure")
available = {n: s for n, s in sources().items() if s.available}
default = lc.default_model_name()
model_name = st.selectbox(
    "model", list(available), index=list(available).index(default) if default in available else 0,
    format_func=lambda n: f"{n} ({'pretrained' if available[n].pretrained else 'random weights'})")
st.caption(f"**In use:** {available[model_name].detail}")
if "distilgpt2" not in available:
    st.caption("distilgpt2 is not available offline here, so the default is SmolLM2-135M-Instruct, a real "
               "pretrained model shipped with the app. " + sources()["distilgpt2"].detail.split(". To get it")[0] + ".")

with st.spinner(f"Loading {model_name}…"):
    candidates = module_names(model_name)
default_targets = [t for t in ("q_proj", "v_proj", "c_attn") if t in candidates]

with st.form("config"):
    c1, c2, c3, c4 = st.columns(4)
    r = c1.select_slider("r", [1, 2, 4, 8, 16, 32, 64], value=8)
    alpha = c2.number_input("lora_alpha", value=16.0, step=1.0)
    dropout = c3.number_input("lora_dropout", value=0.0, step=0.05, format="%.2f")
    init = c4.selectbox("init_lora_weights", [True, "gaussian", "pissa", False],
                        format_func=lambda v: {True: "True (Kaiming A, zero B)",
                                               False: "False (both random)"}.get(v, v))
    c1, c2, c3, c4 = st.columns(4)
    targets = c1.multiselect("target_modules", [*candidates, "all-linear"], default=default_targets)
    rslora = c2.toggle("use_rslora (α/√r)", value=False)
    lr = c3.number_input("learning rate", value=2e-3, format="%.0e", step=1e-4)
    steps = c4.number_input("steps", value=40, min_value=1, max_value=2000, step=10)
    c1, c2, c3, c4 = st.columns(4)
    batch = c1.number_input("batch size", value=8, min_value=1, max_value=64)
    seq_len = c2.number_input("sequence length", value=64, min_value=8, max_value=512, step=8)
    data_name = c3.selectbox("data", ["recommendations", "upload a .jsonl"])
    precision = c1.selectbox("base precision", ["fp32", "bf16", "nf4"],
                             format_func=lambda p: {"nf4": "NF4 (QLoRA, from scratch)"}.get(p, p),
                             help="the frozen base's storage; LoRA factors always train in fp32")
    upload = c4.file_uploader("prompt/completion JSONL", type=["jsonl"], help="one JSON object per line: "
                              '{"prompt": "...", "completion": "..."}')
    start = st.form_submit_button("Start training", type="primary")


def new_run() -> LiveRun:
    limits = settings()
    for name, value in (("r", r), ("steps", steps), ("batch_size", batch), ("seq_len", seq_len)):
        limits.check(name, value)
    target = "all-linear" if "all-linear" in targets else targets
    lora_cfg = lc.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target,
                             use_rslora=rslora, init_lora_weights=init, task_type="CAUSAL_LM")
    train_cfg = lc.TrainConfig(lr=lr, steps=int(steps), batch_size=int(batch), seq_len=int(seq_len))
    if data_name == "recommendations":
        dataset = shipped_dataset("recommendations")
    elif upload is None:
        raise ValueError("data='upload a .jsonl' needs a file: choose one in the uploader")
    else:
        limits.check("upload_bytes", upload.size)
        dataset = lc.Dataset.from_pairs(lc.load_jsonl(upload.getvalue(), max_rows=limits.max_dataset_rows),
                                        name=upload.name)
    model, tok = base_variant(model_name, precision)
    run = LiveRun.start(model, tok, dataset, lora_cfg, train_cfg)
    run.base_name, run.base_precision, run.base_bytes = model_name, precision, lc.weight_bytes(model)
    return run


slots, sid = training_slots(), session_id()
if start:
    slots.release(sid)  # a new run goes to the back of the queue
    with st.spinner("Preparing the run: held-out BLEU, perplexity and samples before training…"):
        run = last_good("finetune:start", new_run)
    if run is not None and run is not st.session_state.get(RUN):
        st.session_state[RUN] = run
        st.session_state.setdefault("trained_adapters", {})

run: LiveRun | None = st.session_state.get(RUN)
if run is None:
    st.info("No run yet in this session. The defaults train in about a minute on a laptop CPU.")
    st.stop()

# --- 2. live training ----------------------------------------------------------------------------
st.header("2. Training")
b1, b2, b3, _ = st.columns([1, 1, 1, 4])
if b1.button("Pause", disabled=run.status != "running"):
    run.pause()
if b2.button("Resume", disabled=run.status != "paused"):
    run.resume()
if b3.button("Stop", disabled=run.status not in ("running", "paused")):
    with st.spinner("Measuring the adapter after training…"):
        run.finish("stopped")


@st.fragment(run_every=1.0 if run.status == "running" else None)
def live() -> None:
    try:
        draw_live()
    except Exception as err:  # a fragment rerun is outside app.py's guard
        show_unexpected(err, "live training")


def draw_live() -> None:
    was_running = run.status == "running"
    place = slots.request(sid) if was_running else 0
    if was_running and place == 0:
        run.advance(seconds=1.0)
    if run.status != "running":
        slots.release(sid)
    if place:
        load = slots.snapshot()
        st.warning(f"Waiting for a training slot: you are number {place} in line "
                   f"({load['running']} of {load['capacity']} slots busy). Pause or stop to leave the queue.")
    trainable, total = run.parameters
    last = run.history[-1] if run.history else {}
    m = st.columns(5)
    m[0].metric("step", f"{run.step} / {run.train_config.steps}")
    m[1].metric("loss", f"{last['loss']:.3f}" if last else "–", help="nats per completion token")
    m[2].metric("tokens/s", f"{last['tokens_per_s']:.0f}" if last else "–")
    m[3].metric("mean ‖ΔW‖_F", f"{last['delta_norm']:.4f}" if last else "0")
    m[4].metric("trainable", f"{trainable:,}", help=f"of {total:,} ({100 * trainable / total:.3f}%)")
    st.progress(run.step / run.train_config.steps, text=f"status: {run.status}")
    if run.message:
        st.error(run.message)
        if run.status == "diverged":
            st.caption("The results below are the restored adapter's. To go on, lower the **learning rate** and "
                       "press **Start training** for a new run.")
    left, right = st.columns(2)
    left.plotly_chart(viz.curves({"training loss": [h["loss"] for h in run.history]}, "Loss on the task",
                                 "loss (nats/token)"), width="stretch")
    right.plotly_chart(viz.curves({"general English": [p["ppl"] for p in run.probes]},
                                  "Learn vs forget: perplexity of a fixed English text", "perplexity",
                                  x_title=f"probe (every {run.probe_every} steps)"), width="stretch")
    latest = run.probes[-1]
    st.dataframe([{"held-out prompt": p, f"greedy at step {latest['step']}": s}
                  for p, s in zip(run.sample_prompts, latest["samples"], strict=True)], hide_index=True)
    if was_running and run.status != "running":
        st.rerun()  # the run ended inside the fragment: redraw the whole page with the results


live()
if run.status in ("running", "paused"):
    st.stop()

# --- 3. results ------------------------------------------------------------------------------------
st.header("3. What it learned, and what it cost")
before, after = run.before, run.after
if "bleu" in before:
    m = st.columns(4)
    m[0].metric("held-out BLEU (0–100)", f"{after['bleu']:.2f}", f"{after['bleu'] - before['bleu']:+.2f}",
                help=f"sacrebleu corpus BLEU on {len(before['prompts'])} held-out prompts; "
                     "0.65 on a 0–1 scale is 65 here")
    m[1].metric("held-out loss", f"{after['heldout_loss']:.3f}",
                f"{after['heldout_loss'] - before['heldout_loss']:+.3f}", delta_color="inverse")
    m[2].metric("perplexity, general English", f"{after['ppl_general']:.2f}",
                f"{after['ppl_general'] - before['ppl_general']:+.2f}", delta_color="inverse")
    m[3].metric(f"base weights ({run.base_precision})", f"{run.base_bytes / 2**20:,.0f} MiB",
                help="every frozen parameter and buffer at rest; NF4 keeps embeddings and lm_head in fp32")
    st.dataframe([{"prompt": p, "reference": ref, "before": b, "after": a} for p, ref, b, a in
                  zip(before["prompts"], before["references"], before["predictions"], after["predictions"],
                      strict=True)], hide_index=True)

report = lc.adapter_report(run.model)
# The run's own base, not the selectbox: that one may have changed, or been reset by a page switch.
base_name = run.base_name or model_name
label = f"{base_name} r={run.lora_config.r} ({run.step} steps)"
st.session_state.setdefault("trained_adapters", {})[label] = {
    row["layer"]: {"A": row["A"], "sv": row["singular_values"]} for row in report}
left, right = st.columns(2)
left.plotly_chart(viz.spectra({row["layer"]: row["singular_values"] for row in report[:8]},
                              "ΔW spectrum per layer (first 8 adapted layers)"), width="stretch")
right.plotly_chart(viz.layer_bars([row["layer"] for row in report], [row["relative"] for row in report],
                                  "‖ΔW‖_F / ‖W‖_F per adapted layer", "relative size of the update"),
                   width="stretch")

# --- 4. merge, toggle, export ---------------------------------------------------------------------
st.header("4. Merge, compare, export")
if st.button("Merge check: merged against unmerged"):
    with st.spinner("Merging (out of place), generating both ways, unmerging…"):
        st.session_state["finetune:merge"] = last_good(
            "finetune:merge", lambda: lc.merge_report(run.model, run.tokenizer, run.sample_prompts))
merge = st.session_state.get("finetune:merge")
if merge:
    m = st.columns(3)
    m[0].metric("max |Δlogit| merged vs unmerged", f"{merge['max_abs_dlogit']:.2e}")
    m[1].metric("tokens/s unmerged", f"{merge['unmerged_tokens_per_s']:.1f}")
    m[2].metric("tokens/s merged", f"{merge['merged_tokens_per_s']:.1f}")
    st.caption("Merging folds B·A·scale into W, so the merged layer is one matmul: the extra branch is gone. "
               f"Same greedy generations both ways: **{merge['same_generations']}**.")

prompt = st.text_input("Try a prompt with the adapter on and off", value=run.sample_prompts[0])
if st.button("Generate both ways"):
    def both() -> tuple[str, str]:
        on = lc.generate(run.model, run.tokenizer, [prompt], 24)[0]
        with lc.disable_lora(run.model):
            off = lc.generate(run.model, run.tokenizer, [prompt], 24)[0]
        return on, off
    result = last_good("finetune:toggle", both)
    if result:
        c1, c2 = st.columns(2)
        c1.markdown(f"**adapter on:** {result[0]}")
        c2.markdown(f"**adapter off (base model):** {result[1]}")

st.download_button("Download the adapter (PEFT format, .zip)", data=lc.adapter_zip(run.model),
                   file_name=f"lora-{base_name}-r{run.lora_config.r}.zip", mime="application/zip")
NOTES = {"smollm2-135m": "the exact base: SmolLM2-135M-Instruct dequantized from its Q4_1 GGUF. The hub's "
                         "HuggingFaceTB/SmolLM2-135M-Instruct is close to it, not identical.",
         "distilgpt2-random": "random weights (seed 0): the adapter only fits this exact random base."}
st.code(lc.peft_snippet(run.model.config._name_or_path or base_name, note=NOTES.get(base_name, "")),
        language="python")
