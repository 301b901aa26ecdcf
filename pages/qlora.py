"""QLoRA and memory: NF4 built live, its error on real SmolLM2 weights, double quantization, paged
optimizers, and a memory estimator for full fine-tuning, LoRA and QLoRA. Every number comes from lora_core."""

import streamlit as st

import lora_core as lc
from lora_core import viz
from lora_core.quant import codebook, memory
from lora_core.teach import qlora_study
from lora_core.teach.qlora_study import BLOCK_SIZES, CONTROL, LAYERS, MODEL
from pages.common import base_model, last_good

METHOD_LABELS = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}

st.title("QLoRA and memory")
st.caption("QLoRA (Dettmers et al. 2023, arXiv 2305.14314) fine-tunes LoRA adapters (arXiv 2106.09685) on top "
           "of a base model stored in 4 bits. Below, the 4-bit format is built from scratch and measured, and "
           "the memory of a training step is added up component by component.")
st.markdown(
    "The paper (section 3) names **three ideas**: the **NF4** data type (section 1 below), **double "
    "quantization** (section 3) and **paged optimizers** (section 5). The first two stand on **blockwise absmax** "
    "quantization (section 2), which QLoRA takes from the earlier 8-bit optimizers work (Dettmers et al. 2021, "
    "arXiv 2110.02861).")

# --- 1. the codebook ------------------------------------------------------------------------------
st.header("1. NF4: sixteen quantiles of a normal distribution")
edge = codebook.NF4_OFFSET
st.markdown(
    "A 4-bit code can only name 16 values, so the whole format is a list of 16 **levels** in [-1, 1]. "
    "NF4 puts them where a normally distributed weight is most likely to be: at evenly spaced "
    "*probabilities* of N(0, 1), read through the inverse CDF Φ⁻¹. Eight positive levels take the "
    f"probabilities from {edge:.4f} down to 0.5, seven negative levels mirror eight of them, and an exact 0 "
    f"completes the sixteen. Dividing by Φ⁻¹({edge:.4f}) puts the outermost levels at ±1.")
st.latex(rf"q_i = \frac{{\Phi^{{-1}}(p_i)}}{{\Phi^{{-1}}({edge:.4f})}}, \qquad p_i \text{{ evenly spaced in }} "
         rf"[0.5,\ {edge:.4f}]")
st.caption(f"The edge probability {edge} = 1 − ½(1/30 + 1/32) is the default `offset` of bitsandbytes' "
           "`create_normal_map`, the code released with the paper. The paper describes quantiles of N(0, 1) but "
           "gives no value for it; the levels below match bitsandbytes' table.")
st.markdown(
    "Seed 002 says NF4 \"uses logarithmic scaling\". It does not. Below is NF4 next to a plain uniform "
    "4-bit grid and a real logarithmic grid (sign bit plus 3-bit exponent, ±2⁻ᵏ): each of its levels is "
    "half the next one, so it crowds its levels around 0 and leaves wide gaps near ±1.")

books = codebook.codebooks()
st.plotly_chart(viz.codebook_levels(books, codebook.normal_density_on_codebook_scale()), width="stretch")
with st.expander("The 16 levels of each codebook"):
    st.dataframe(qlora_study.codebook_table(), hide_index=True)

# --- 2. blockwise absmax on real weights ------------------------------------------------------------
st.header("2. Blockwise absmax, and the error on real weights")
st.markdown(
    "Blockwise quantization is older than QLoRA: it comes from the 8-bit optimizers work (arXiv 2110.02861). "
    "Before rounding, the weights are cut into **blocks of 64** and each block is divided by its own "
    "largest |w|, its *absmax*. The block now fills [-1, 1] and its largest weight is stored exactly. "
    "Each weight becomes the index of its nearest level, and the block keeps one fp32 constant. "
    "Dequantizing multiplies the level back by that constant: ŵ = level · absmax. "
    "Small blocks keep one outlier from flattening a whole row.")


@st.cache_resource(show_spinner=False)
def weights(name: str):
    """The weight to study: a layer of the shared SmolLM2 (read only) or the seeded control."""
    return qlora_study.weight_to_study(None if name == CONTROL else base_model(MODEL)[0], name)


try:
    base_model(MODEL)
    layer_options = [*LAYERS, CONTROL]
except lc.ModelUnavailableError as err:
    st.warning(f"SmolLM2 is not available here ({err}); only the synthetic control is shown.")
    layer_options = [CONTROL]

c1, c2 = st.columns(2)
layer = c1.selectbox("weight matrix", layer_options, key="qlora_layer")
block_size = c2.select_slider("block size", BLOCK_SIZES, value=64, key="qlora_block")


@st.cache_data(show_spinner="Quantizing…")
def study(name: str, block_size: int) -> dict:
    return qlora_study.study(weights(name), block_size)


@st.cache_data(show_spinner=False)
def block_sweep(name: str) -> list[dict]:
    return qlora_study.block_sweep(weights(name))


res = study(layer, block_size)
if layer != CONTROL:
    st.caption(f"`{layer}` of SmolLM2-135M-Instruct, {res['shape'][0]}×{res['shape'][1]}. The weights shipped "
               f"here were unpacked from a Q4_1 GGUF file, so runs of 32 already sit on 16 evenly spaced values: "
               f"that helps the uniform grid, not NF4. The seeded normal control has no such history.")
left, right = st.columns([2, 3])
with left:
    st.metric(f"absmax of block 0 (of {res['n_blocks']:,})", f"{res['absmax0']:.5f}")
    st.dataframe(res["first"], hide_index=True)
    st.caption("The first 8 weights of block 0, rounded to NF4 and back.")
with right:
    st.plotly_chart(viz.weight_histogram(*res["hist"], books, f"{layer}: weights / block absmax, blocks of "
                                         f"{block_size}"), width="stretch")

st.dataframe(qlora_study.error_table(res["table"]), hide_index=True)
rank = qlora_study.codebook_ranking(res["table"])
entropy = ", ".join(f"{k} {bits:.2f}" for k, bits in rank["entropy"].items())
st.markdown(f"Measured on this matrix: **{rank['best']}** has the lowest RMSE; "
            + ", ".join(f"{k} is {v:.2f}× worse" for k, v in rank["ratios"].items()) + ". "
            f"Code entropy, in bits (16 codes can carry at most 4): {entropy}. Using the codes evenly is not "
            f"enough on its own: the log grid puts 8 of its 16 levels within ±{rank['log_inner_level']:g} and leaves "
            f"a gap of {rank['log_top_gap']:g} between its two largest, so the big weights, which carry "
            "most of ‖w‖, are rounded coarsely.")
st.plotly_chart(viz.error_histograms(res["error_hists"]), width="stretch")
with st.expander("Block size: error against the cost of the constants"):
    st.dataframe(block_sweep(layer), hide_index=True)
    st.caption("Bigger blocks need fewer fp32 constants but let one large weight coarsen more neighbours.")

# --- 3. double quantization ------------------------------------------------------------------------
st.header("3. Double quantization: the constants get quantized too")
plain, double = codebook.constant_bits_per_param(64, False), codebook.constant_bits_per_param(64, True)
st.markdown(
    "One fp32 absmax per 64 weights costs 32/64 bits per weight, as much as an eighth of the 4-bit code "
    "itself. QLoRA quantizes those constants as well: subtract their mean, then store them in 8 bits, in "
    "blocks of 256 with one fp32 constant per block.")
st.latex(rf"\frac{{32}}{{64}} = {plain:g}\ \text{{bits}} \quad\longrightarrow\quad "
         rf"\frac{{8}}{{64}} + \frac{{32}}{{64 \cdot 256}} = {double:.4f}\ \text{{bits per weight}}")
d1, d2, d3 = st.columns(3)
d1.metric("constants, plain", f"{plain:g} bits / weight")
d2.metric("constants, double-quantized", f"{double:.3f} bits / weight", help=f"exactly {double}")
d3.metric(f"measured on this matrix (blocks of {block_size})", f"{res['dq_bits']:.4f} bits / weight",
          help="8-bit codes, fp32 second-level constants and the mean, divided by the number of weights; "
               f"largest relative error of a reconstructed absmax: {res['dq_error']:.2%}")

# --- 4. memory -------------------------------------------------------------------------------------
st.header("4. Memory: full fine-tuning, LoRA and QLoRA")
st.markdown(
    "Training memory has five parts: the **weights**, the 4-bit format's **quantization constants**, one "
    "**gradient** per trainable parameter, the **optimizer states**, and the **activations** saved for the "
    "backward pass. LoRA shrinks gradients and optimizer states, because only A and B train. QLoRA then "
    "shrinks the frozen weights themselves.")

KEYS = {"model": "qlora_model", "method": "qlora_method", "r": "qlora_r", "target_modules": "qlora_targets",
        "weight_dtype": "qlora_dtype", "batch_size": "qlora_batch", "seq_len": "qlora_seq",
        "optimizer": "qlora_opt", "gradient_checkpointing": "qlora_gc", "flash_attention": "qlora_flash",
        "double_quant": "qlora_dq", "optimizer_precision": "qlora_precision", "lora_dropout": "qlora_dropout"}
PRESET = memory.SEED_002_QLORA


def load_seed_002() -> None:
    """Put every input back to seed 002's setup (also the page's starting point)."""
    for field, key in KEYS.items():
        value = getattr(PRESET, field)
        st.session_state[key] = "" if field == "target_modules" and value is None else value


if any(key not in st.session_state for key in KEYS.values()):
    load_seed_002()
st.button("Load seed 002's setup: Llama-2-7b, QLoRA, r=64, batch 4", on_click=load_seed_002)
configs = lc.models.available_configs()
c1, c2, c3, c4 = st.columns(4)
model = c1.selectbox("model (shapes only)", configs, key=KEYS["model"])
method = c2.radio("method", list(METHOD_LABELS), format_func=METHOD_LABELS.get, key=KEYS["method"], horizontal=True)
dtype = c3.selectbox("weight / compute dtype", list(memory.DTYPE_BYTES), key=KEYS["weight_dtype"])
optimizer = c4.selectbox("optimizer", list(memory.OPTIMIZERS), key=KEYS["optimizer"])
c1, c2, c3, c4 = st.columns(4)
r = c1.number_input("rank r", min_value=1, step=1, key=KEYS["r"])
targets = c2.text_input("target_modules", key=KEYS["target_modules"],
                        help="comma-separated names, 'all-linear', or empty for PEFT's default")
batch = c3.number_input("batch size", min_value=1, step=1, key=KEYS["batch_size"])
seq = c4.number_input("sequence length", min_value=1, step=64, key=KEYS["seq_len"])
c1, c2, c3, c4 = st.columns(4)
dropout = c1.number_input("lora_dropout", min_value=0.0, max_value=0.99, step=0.05, key=KEYS["lora_dropout"])
gc = c2.toggle("gradient checkpointing", key=KEYS["gradient_checkpointing"])
flash = c3.toggle("FlashAttention", key=KEYS["flash_attention"])
dq = c4.toggle("double quantization", key=KEYS["double_quant"])
precision = st.selectbox("bytes per trained parameter (weights + gradients + AdamW states)",
                         memory.OPTIMIZER_PRECISIONS, format_func=memory.PRECISION_LABELS.get,
                         key=KEYS["optimizer_precision"],
                         help="How the optimizer's states are counted. LoRA's factors train in fp32, so this choice "
                              "only moves full fine-tuning of a 16-bit model.")


def estimates() -> tuple[memory.MemoryConfig, dict[str, memory.MemoryEstimate]]:
    return qlora_study.memory_comparison(
        targets, model=model, method=method, r=int(r), lora_alpha=PRESET.lora_alpha, lora_dropout=float(dropout),
        weight_dtype=dtype, batch_size=int(batch), seq_len=int(seq), optimizer=optimizer, gradient_checkpointing=gc,
        flash_attention=flash, double_quant=dq, optimizer_precision=precision)


result = last_good("qlora:memory", estimates)
if result:
    cfg, by_method = result
    est = by_method[cfg.method]
    st.plotly_chart(viz.memory_bars({METHOD_LABELS[m]: e for m, e in by_method.items()}), width="stretch")
    per_param = {METHOD_LABELS[m]: e.bytes_per_trainable_param for m, e in by_method.items()}
    st.caption(f"Accounting used by these bars: {memory.PRECISION_LABELS[cfg.optimizer_precision]}, "
               f"with the {cfg.optimizer} optimizer. Weights + gradients + optimizer states per trained parameter: "
               + ", ".join(f"{label} {b:g} B" for label, b in per_param.items())
               + ". LoRA's A and B are fp32, so the choice above moves only full fine-tuning.")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(f"{METHOD_LABELS[cfg.method]}, total", f"{memory.gib(est.total):.2f} GiB")
    m2.metric("trainable parameters", f"{est.trainable_params:,}")
    m3.metric("layers with LoRA", f"{est.layers_with_lora} of {est.num_layers}" if cfg.method != "full" else "—")
    m4.metric("base parameters", f"{est.base_params:,}")
    st.dataframe([{"component": row["component"], "GiB": round(row["GiB"], 3), "formula": row["formula"]}
                  for row in est.records()], hide_index=True)

    lora, qlora = by_method["lora"], by_method["qlora"]
    st.markdown(
        f"**Seed 002 says QLoRA saves memory by \"training only a few layers\".** The estimator says otherwise: "
        f"LoRA places its {lora.trainable_params:,} parameters in **{lora.layers_with_lora} of "
        f"{lora.num_layers} layers**, every layer the targets match. The saving between LoRA and QLoRA is all "
        f"in the frozen weights: {memory.gib(lora.weights):.2f} GiB in {cfg.weight_dtype} against "
        f"{memory.gib(qlora.weights):.2f} GiB with NF4 ({memory.gib(qlora.quant_constants):.3f} GiB of "
        f"constants on top). Gradients and optimizer states are the same for both.")

    st.subheader(f"The same {METHOD_LABELS[cfg.method]} setup in fp32, bf16 and fp16 (GiB)")
    st.markdown("Seed 002 is right that fp32 costs more: 4 bytes per value instead of 2, for the weights, "
                "the gradients of full fine-tuning, and the activations. Each row uses the accounting chosen "
                f"above ({memory.PRECISION_LABELS[cfg.optimizer_precision]}); torch's AdamW keeps its moments "
                "in each parameter's own dtype, so whether they shrink with the weights depends on that choice.")
    st.dataframe(qlora_study.dtype_table(cfg), hide_index=True)

    seed_runs = qlora_study.seed_002()
    seed, seed_gc = seed_runs["as given"], seed_runs["with checkpointing"]
    st.caption(
        f"Seed 002's setup: Llama-2-7b, QLoRA, r=64, α=16, dropout 0.1, NF4 with fp16 compute, batch 4, "
        f"no double quantization (use_nested_quant=False), PEFT's default targets (q_proj, v_proj). The seed gives "
        f"no sequence length; we assume {PRESET.seq_len} tokens. Estimated total {memory.gib(seed.total):.1f} GiB, of "
        f"which {memory.gib(seed.activations):.1f} GiB activations; gradient checkpointing would bring the total to "
        f"{memory.gib(seed_gc.total):.1f} GiB.")

with st.expander("How each part is computed"):
    st.markdown(
        "- **Weights:** P parameters × bytes of the dtype (4 for fp32, 2 for bf16/fp16). QLoRA stores every "
        "Linear weight except the output layer in NF4, 0.5 bytes each (two codes per byte); embeddings, norms "
        "and the output layer stay in the compute dtype. LoRA's A and B are kept in fp32, as PEFT does by default.\n"
        "- **Quantization constants:** quantized weights × bits per weight from section 3 ÷ 8.\n"
        "- **Gradients:** one per trainable parameter, in its dtype.\n"
        "- **Optimizer:** `torch.optim.AdamW` keeps two moments (`exp_avg`, `exp_avg_sq`) in each parameter's "
        "own dtype: 2 + 2 B for a bf16 weight, 4 + 4 B for LoRA's fp32 factors. Plain SGD keeps none; 8-bit AdamW "
        "about 2 B. The selector above chooses how full fine-tuning of a 16-bit model is counted: "
        + "; ".join(memory.PRECISION_LABELS[p] for p in memory.OPTIMIZER_PRECISIONS) + ".\n"
        "- **Activations:** the tensors autograd saves for the backward pass, added up site by site "
        "(`lora_core.quant.activations`), after Korthikanti et al. 2022 (arXiv 2205.05198) for GPT-style blocks "
        "and our own derivation for Llama-style ones. A frozen projection saves no input, because it needs no "
        "weight gradient; only a LoRA A that reads the same tensor keeps it. So with q and v targets, the inputs "
        "of o_proj and of the MLP projections are not stored, and LoRA keeps fewer activations than full "
        "fine-tuning. FlashAttention stores no s×s scores; gradient checkpointing keeps each block's input and "
        "recomputes one block at a time. The logits add s·b·V·(bytes + 4).\n"
        "- **Left out:** the CUDA context, allocator fragmentation and temporary buffers (a dequantized 4-bit "
        "weight, for one). The Memory page measures a real step beside this estimate.")

# --- 5. paged optimizers ----------------------------------------------------------------------------
st.header("5. Paged optimizers: QLoRA's third idea")
st.markdown(
    "The optimizer states (AdamW's two moments) are allocated in **NVIDIA unified memory**. When the GPU runs "
    "short, the driver **evicts those pages to CPU RAM** and **pages them back** when the optimizer update needs "
    "them, instead of failing with out-of-memory. The QLoRA paper adds them for the **memory spikes** of training "
    "with gradient checkpointing: a mini-batch of long sequences can briefly need far more activation memory "
    "than an ordinary one. They cost little while memory suffices, and time (PCIe transfers) when paging "
    "happens; bitsandbytes provides them (`paged_adamw_8bit`, `paged_adamw_32bit` in transformers' Trainer).")
if result:
    paging = qlora_study.paged_optimizer_view(cfg)
    p1, p2, p3 = st.columns(3)
    p1.metric("optimizer states (can be paged out)", f"{memory.gib(paging['optimizer']):.3f} GiB",
              help=f"{paging['optimizer_share']:.1%} of this setup's {memory.gib(paging['total']):.2f} GiB")
    p2.metric(f"total at {paging['long_seq_len']:,} tokens", f"{memory.gib(paging['long_total']):.2f} GiB",
              help=f"the same setup with {qlora_study.LONG_SEQ_FACTOR}× the sequence length")
    p3.metric("activation spike of that batch", f"{memory.gib(paging['spike']):.2f} GiB")
    st.caption(f"Estimated for the setup above ({METHOD_LABELS[cfg.method]}, {cfg.model}). Paging can free at most "
               "the optimizer states: with LoRA they are small, so paging rides out a spike only when it is about "
               "that size; a bigger spike still needs checkpointing, a smaller batch or a bigger GPU.")
