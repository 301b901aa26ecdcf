"""Memory, estimated and measured: one real training step's bytes counted tensor by tensor, beside the
estimator's formula for the same configuration, and the gradient-checkpointing trap, run. Every number
comes from lora_core.quant (measure, explain, checkpointing); this page reads inputs and draws."""

import streamlit as st

from lora_core.quant import checkpointing, measure, memory
from lora_core.quant.codebook import constant_bits_per_param
from lora_core.viz import memory as memory_viz
from pages.common import last_good

SERVER_LIMIT = 2**30  # the page measures steps whose estimate is at most 1 GiB: it runs them on the server
METHOD_LABELS = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA (NF4 base)"}
MODEL_LABELS = {"distilgpt2": "distilgpt2 shapes (82M, GPT-2 blocks)",
                "SmolLM2-135M": "SmolLM2-135M shapes (Llama blocks)"}

st.title("Memory: estimated and measured")
st.caption("No calculator measures, so this page does. It builds the model with the real shapes and random "
           "weights, runs one training step here on the server (forward, backward, one optimizer step), and "
           "counts the bytes each component really holds: weights and gradients by dtype, the optimizer's "
           "states read from `optimizer.state`, the NF4 constants, and every tensor autograd saved for backward "
           "(seen by `torch.autograd.graph.saved_tensors_hooks`, counted once per storage).")


@st.cache_data(show_spinner="Running one training step…", max_entries=16)
def measured(model: str, method: str, r: int, targets: str, dtype: str, batch: int, seq: int, precision: str,
             gc: bool, double_quant: bool) -> tuple[measure.MeasuredMemory, list[dict]]:
    """One measured step and its comparison with the estimate, cached per input (a step costs seconds)."""
    cfg = memory.MemoryConfig(model=model, method=method, r=r, target_modules=measure.TARGET_PRESETS[model][targets],
                              weight_dtype=dtype, batch_size=batch, seq_len=seq, optimizer_precision=precision,
                              gradient_checkpointing=gc, double_quant=double_quant)
    m = measure.measure_step(cfg, max_estimated_bytes=SERVER_LIMIT)
    return m, measure.compare(m, memory.estimate_memory(cfg))


@st.cache_data(show_spinner="Running the checkpointing trap (five small steps)…", max_entries=8)
def trap(model: str, method: str, r: int, targets: str, dtype: str, narrow: bool) -> list[dict]:
    """The trap's five steps, cached per input: on the model's narrow copy (milliseconds) or its real shapes."""
    cfg = memory.MemoryConfig(model=model, method=method, r=r, target_modules=measure.TARGET_PRESETS[model][targets],
                              weight_dtype=dtype)
    return checkpointing.checkpoint_trap(cfg, narrow=narrow)


c1, c2, c3 = st.columns(3)
model = c1.selectbox("model", measure.MEASURABLE_MODELS, format_func=MODEL_LABELS.get, key="mem_model")
method = c2.radio("method", memory.METHODS, index=1, format_func=METHOD_LABELS.get, key="mem_method", horizontal=True)
dtype = c3.selectbox("weight dtype (and compute)", ("bf16", "fp32", "fp16"), key="mem_dtype")
c1, c2, c3 = st.columns(3)
targets = c1.selectbox("target_modules", list(measure.TARGET_PRESETS[model]), key=f"mem_targets_{model}",
                       disabled=method == "full")
r = c2.select_slider("r", (1, 2, 4, 8, 16, 32, 64), value=8, key="mem_r", disabled=method == "full")
precision = c3.selectbox("optimizer precision (16-bit full fine-tuning)", memory.OPTIMIZER_PRECISIONS,
                         format_func=lambda p: f"{p}: {memory.PRECISION_LABELS[p]}", key="mem_precision")
c1, c2, c3 = st.columns(3)
batch = c1.number_input("batch size", 1, 4, 1, key="mem_batch")
seq = c2.number_input("sequence length", 8, 256, 64, step=8, key="mem_seq")
gc = c3.toggle("gradient checkpointing", key="mem_gc")
st.caption(f"The optimizer is AdamW. QLoRA here is lora_core's own NF4Linear: it keeps one fp32 absmax per block "
           f"of 64 weights "
           f"({constant_bits_per_param(64, False):.3f} bit per weight) and does not double-quantize, so the estimate "
           f"is asked for the same, `double_quant=False`; with QLoRA's double quantization it would count "
           f"{constant_bits_per_param(64, True):.3f} bit per weight. "
           f"Steps whose estimate exceeds {SERVER_LIMIT / 2**30:.0f} GiB are refused: this server measures small "
           f"steps only. The weights are random (their values change no byte count).")

result = last_good("memory:measured", lambda: measured(model, method, r, targets, dtype, int(batch), int(seq),
                                                        precision, gc, False))
if result is not None:
    m, rows = result
    k1, k2, k3, k4 = st.columns(4)
    total = next(row for row in rows if row["component"] == "total")
    k1.metric("measured, total", f"{total['measured MB']:.1f} MB")
    k2.metric("estimated, total", f"{total['estimated MB']:.1f} MB", f"ratio {total['ratio']:.2f}",
              delta_color="off")
    k3.metric("CUDA max_memory_allocated", "not on CUDA" if m.cuda_peak is None else f"{m.cuda_peak / 1e6:.1f} MB",
              help=f"measured on {m.device}; torch.cuda.max_memory_allocated during the step, on CUDA only")
    k4.metric("this step took", f"{m.seconds:.1f} s", help="build (from a cached base), forward, backward, step")

    st.header("1. The ledger, measured beside the estimate")
    st.plotly_chart(memory_viz.measured_vs_estimated(rows), width="stretch")
    st.dataframe([{k: v for k, v in row.items() if k != "explanation"} for row in rows], hide_index=True,
                 column_config={"ratio": st.column_config.NumberColumn(format="%.3f"),
                                "measured MB": st.column_config.NumberColumn(format="%.3f"),
                                "estimated MB": st.column_config.NumberColumn(format="%.3f")})
    with st.expander("Where each byte was found (by dtype)"):
        st.json(m.detail)

    st.header("2. Every difference over 10%, explained")
    off = [row for row in rows if row["explanation"]]
    if not off:
        st.success("Every component agrees with the estimate within 10%.")
    for row in off:
        st.markdown(f"**{row['component']}** (measured / estimated = {row['ratio']:.2f}): {row['explanation']}")

    st.header("3. The biggest saved tensors")
    st.markdown("Each saved storage is tagged with the module whose forward saved it, read from the Python stack "
                "(no hook on the module, so the step runs exactly as in training).")
    st.plotly_chart(memory_viz.saved_sites(m.saved_by_site(10)), width="stretch")
    st.dataframe(m.biggest_saved(12), hide_index=True)

st.header("4. Gradient checkpointing with LoRA, measured")
st.markdown("Checkpointing keeps each block's input and recomputes the rest in the backward pass. Below, the same "
            "step without and with it: what is left is often not the blocks at all but what sits outside them.")
pair = last_good("memory:checkpointing", lambda: checkpointing.checkpointing_rows([
    measured(model, method, r, targets, dtype, int(batch), int(seq), precision, on, False)[0] for on in (False, True)]))
if pair is not None:
    st.plotly_chart(memory_viz.checkpointing_bars(pair), width="stretch")
    st.dataframe(pair, hide_index=True)

st.subheader("The trap: lora_B without a gradient")
st.markdown(
    "PEFT's issue threads report LoRA runs with checkpointing whose adapters never learn. With torch's reentrant "
    "checkpoint (`use_reentrant=True`, what older transformers and PEFT set-ups used) a checkpointed block gets a "
    "backward pass only if one of its inputs requires grad, and a frozen embedding's output does not. "
    "`model.enable_input_require_grads()` is the fix. Whether lora_B gets a gradient depends on the graph, not on "
    "the widths, so the trap runs on a narrow copy of your model unless you ask for the real shapes (about 15 s).")
real = st.toggle("run the trap on the real shapes", key="mem_trap_real")
trap_rows = last_good("memory:trap", lambda: trap(model, method, r, targets, dtype, not real))
if trap_rows is not None:
    on = f"{model} with its real shapes" if real else measure.narrow_description(model)
    st.markdown(f"Each row below is one real training step (batch 1, 32 tokens, {dtype}, {METHOD_LABELS[method]} "
                f"on {targets}) of **{on}**.")
    st.dataframe(trap_rows, hide_index=True,
                 column_config={"lora_B grad norm": st.column_config.NumberColumn(format="%.4f")})
    st.caption("transformers 5's `activation_checkpointing_enable()` (and the deprecated "
               "`gradient_checkpointing_enable()`) defaults to use_reentrant=False and installs the input hook "
               "itself: the trap needs the old setting, as the row says.")
