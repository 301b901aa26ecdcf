"""Model answers and evidence for the quiz's quantization, memory and speed questions (concepts.py lists them).

Every number is computed when asked: the NF4 codebook (quant.codebook), the memory estimator
(quant.memory), and the benchmark LoRA Lab measured and shipped (results/bench, read through
bench.report). Figures measured elsewhere are labelled as quoted, with their setting. Sources:
QLoRA (Dettmers et al. 2023, arXiv 2305.14314, §3: NF4, double quantization, paged optimizers);
8-bit optimizers (Dettmers et al. 2021, arXiv 2110.02861: blockwise quantization); bitsandbytes'
`create_normal_map` (NF4's offset).
"""

from __future__ import annotations

from dataclasses import replace

from ...bench import report
from ...quant import codebook, memory
from .. import evidence_quant, training_runs
from ..evidence import Evidence, percent

# NF4's outermost probability is 1 − δ with δ = ½(1/30 + 1/32): bitsandbytes' create_normal_map default
# (offset=0.9677083), not a value the QLoRA paper states.
NF4_DELTA_TEXT = "δ = ½(1/30 + 1/32)"
LONG_SEQ = 4096   # the long-sequence case of the paged-optimizer answer (tokens)


# --- quantization --------------------------------------------------------------------------------------------
def nf4_offset() -> dict:
    """NF4's offset as bitsandbytes' create_normal_map uses it, and the δ it comes from."""
    delta = (1 / 30 + 1 / 32) / 2
    return {"delta": delta, "offset": 1 - delta, "shipped_offset": codebook.NF4_OFFSET}


def nf4_answer() -> str:
    c, off = evidence_quant.codebook_comparison(), nf4_offset()
    return (f"4-bit NormalFloat: 16 levels at quantiles of N(0, 1), scaled to [-1, 1] with an exact zero, so "
            f"normally distributed weights fall into each level about equally often. Its positive levels sit "
            f"{c['nf4_probability_steps'][0]:.4f} apart in probability; nothing about it is logarithmic. The outermost "
            f"quantile is taken at 1 − δ with {NF4_DELTA_TEXT}, offset = {off['offset']:.7f}: that is bitsandbytes' "
            f"create_normal_map default, not a value the QLoRA paper gives. In QLoRA the weights are cut into "
            f"blocks of {c['block_size']} and divided by the block's absmax before rounding; blockwise quantization "
            f"comes from the earlier 8-bit optimizers (Dettmers et al. 2021, arXiv 2110.02861), not from QLoRA.")


def codebook_evidence() -> Evidence:
    c, off = evidence_quant.codebook_comparison(), nf4_offset()
    return Evidence(table=c["errors"], figure={"kind": "codebook", "books": c["books"], "density": c["density"]},
                    metrics={"NF4 offset 1 − δ (bitsandbytes' create_normal_map default)": f"{off['offset']:.7f}"},
                    note="quant.codebook on a seeded N(0, 0.02²) matrix")


def double_quant_answer() -> str:
    c = evidence_quant.codebook_comparison()
    return (f"It quantizes the block constants. Each block of {c['block_size']} weights keeps an fp32 absmax: "
            f"32/{c['block_size']} = {c['bits_plain']:g} bits per weight. Double quantization stores those constants "
            f"in 8 bits, in blocks of 256 with one fp32 constant each: {c['bits_double']:.3f} bits per weight "
            f"(measured {c['bits_double_measured']:.4f}), with constants off by at most "
            f"{percent(c['double_quant_max_rel_error'], 2)}.")


def qlora_merge_answer() -> str:
    q = evidence_quant.qlora_merge_error()
    return (f"Not losslessly. Storing W + ΔW back in NF4 rounds it again, and the rounding is as large as the update "
            f"itself: {q['nf4_requantized']:.2f}×‖ΔW‖ for an update {percent(q['relative_update'], 0)} the size of W. "
            f"Merge into a dequantized 16-bit copy instead ({q['bf16']:.2f}×‖ΔW‖ in bf16) or keep the adapter "
            f"separate (exact).")


# --- paged optimizers -----------------------------------------------------------------------------------------
def paged_numbers() -> dict:
    """Optimizer-state bytes against the step's total for seed 002's QLoRA setup, and its activations at
    LONG_SEQ tokens with gradient checkpointing: what paging would move, and the spike it is for."""
    base = memory.SEED_002_QLORA
    est = memory.estimate_memory(base)
    long = memory.estimate_memory(replace(base, seq_len=LONG_SEQ, gradient_checkpointing=True))
    return {"config": base, "estimate": est, "long": long, "optimizer_mib": est.optimizer / 2**20,
            "total_gib": memory.gib(est.total), "long_activations_gib": memory.gib(long.activations),
            "long_total_gib": memory.gib(long.total), "trainable": est.trainable_params}


def paged_answer() -> str:
    n = paged_numbers()
    cfg = n["config"]
    return (f"QLoRA's third idea (§3): the optimizer states are allocated in NVIDIA unified memory, which the "
            f"driver evicts page by page to CPU RAM when the GPU runs out and pages back into the GPU when the "
            f"optimizer update needs them. It matters for memory spikes: the paper uses it against the spikes of "
            f"gradient checkpointing on mini-batches with long sequences. In seed 002's QLoRA setup "
            f"({cfg.model}, r = {cfg.r}, batch {cfg.batch_size} × {cfg.seq_len} tokens) the estimator puts the AdamW "
            f"states at {n['optimizer_mib']:.0f} MiB of a {n['total_gib']:.2f} GiB step; at {LONG_SEQ} tokens with "
            f"checkpointing the activations alone are {n['long_activations_gib']:.2f} GiB. When memory never runs "
            f"short nothing is evicted and paging costs nothing; when it does, the update waits on CPU↔GPU "
            f"transfers instead of failing. In code: bitsandbytes' PagedAdamW, or optim='paged_adamw_32bit' in "
            f"transformers.")


def paged_evidence() -> Evidence:
    n = paged_numbers()
    table = [{"component": c, f"{n['config'].seq_len} tokens (GiB)": memory.gib(a),
              f"{LONG_SEQ} tokens, checkpointing (GiB)": memory.gib(b)}
             for c, a, b in zip(memory.COMPONENTS, n["estimate"].breakdown().values(),
                                n["long"].breakdown().values(), strict=True)]
    return Evidence(metrics={"optimizer states (what paging moves)": f"{n['optimizer_mib']:.0f} MiB",
                             "trainable parameters": f"{n['trainable']:,}"},
                    table=table, note="quant.memory.estimate_memory on SEED_002_QLORA (an estimate, not a measurement)")


def qlora_ideas_answer() -> str:
    c, n = evidence_quant.codebook_comparison(), paged_numbers()
    return (f"Three (QLoRA §3): NF4, a 4-bit data type whose levels are normal quantiles; double quantization, "
            f"which stores the fp32 block constants in 8 bits ({c['bits_plain']:g} → {c['bits_double']:.3f} "
            f"bits per weight with blocks of {c['block_size']}); and paged optimizers, which keep the optimizer "
            f"states ({n['optimizer_mib']:.0f} MiB for seed 002's adapter) in unified memory that can spill to CPU "
            f"RAM during memory spikes. Blockwise absmax quantization is not one of them: QLoRA takes it from "
            f"8-bit optimizers (Dettmers et al. 2021, arXiv 2110.02861).")


def qlora_ideas_evidence() -> Evidence:
    c, n = evidence_quant.codebook_comparison(), paged_numbers()
    return Evidence(table=[
        {"idea": "NF4", "source": "QLoRA §3", "what it saves": "4-bit codes: 0.5 B per weight instead of 2"},
        {"idea": "double quantization", "source": "QLoRA §3",
         "what it saves": f"constants {c['bits_plain']:g} → {c['bits_double']:.3f} bits per weight"},
        {"idea": "paged optimizers", "source": "QLoRA §3",
         "what it saves": f"out-of-memory during spikes; pages {n['optimizer_mib']:.0f} MiB of AdamW states"},
        {"idea": "blockwise absmax (used, not introduced)", "source": "8-bit optimizers, arXiv 2110.02861",
         "what it saves": "one outlier only coarsens its own block"}],
        note="quant.codebook and quant.memory, computed now")


# --- memory -----------------------------------------------------------------------------------------------------
def memory_setup() -> memory.MemoryConfig:
    return memory.MemoryConfig(model="Llama-2-7b", method="lora", r=8, weight_dtype="bf16", seq_len=512)


def memory_evidence() -> Evidence:
    cfg = memory_setup()
    est = memory.compare_methods(cfg)
    table = [{"component": c, **{m: memory.gib(e.breakdown()[c]) for m, e in est.items()}} for c in memory.COMPONENTS]
    return Evidence(table=table, figure={"kind": "memory", "estimates": est},
                    note="quant.memory.compare_methods: Llama-2-7b, bf16, batch 1, 512 tokens, AdamW counted as "
                         f"{memory.PRECISION_LABELS[cfg.optimizer_precision]} (GiB)")


def memory_answer() -> str:
    est = memory.compare_methods(memory_setup())
    full, lora = est["full"].breakdown(), est["lora"].breakdown()
    g = memory.gib
    return (f"In gradients and optimizer states, which exist only for trainable parameters. Llama-2-7b in bf16, "
            f"AdamW counted as {memory.PRECISION_LABELS[memory_setup().optimizer_precision]}: "
            f"gradients {g(full['gradients']):.1f} → {g(lora['gradients']):.2f} GiB and AdamW states "
            f"{g(full['optimizer states']):.1f} → {g(lora['optimizer states']):.2f} GiB. The frozen weights still "
            f"take {g(lora['weights']):.1f} GiB; QLoRA attacks that part by storing them in 4 bits.")


def activations_answer() -> str:
    est = memory.compare_methods(memory_setup())
    full, lora = est["full"].activations, est["lora"].activations
    return (f"Somewhat, not much. Autograd keeps a tensor only if a backward step needs it, and a frozen Linear "
            f"needs its input only for its own weight gradient. So with LoRA on q_proj and v_proj, the inputs of "
            f"o_proj and of the MLP projections are not stored, while the q/k/v input still is (lora_A reads it). "
            f"Everything else the backward pass needs on its way through the frozen layers stays. In this estimate "
            f"(Llama-2-7b, bf16, batch 1 × 512 tokens): {memory.gib(full):.2f} GiB for full fine-tuning against "
            f"{memory.gib(lora):.2f} GiB for LoRA, {percent(1 - lora / full, 0)} less. Gradient checkpointing, "
            f"shorter sequences or smaller batches cut far more.")


# --- speed -------------------------------------------------------------------------------------------------------
def measured_speed() -> dict | None:
    """× the floor of LoRA on all linear layers (ours, PEFT), and of full fine-tuning, in the shipped CPU benchmark."""
    result = report.shipped_result("cpu")
    if result is None:
        return None
    mode = result["floor_mode"]
    rows = {r["case"]: r for r in report.case_rows(result, mode)}
    return {"mode": mode, "setting": f"{result['device_name']}, {result['model']}, {result['dtype']}, batch "
                                     f"{result['batch']} × {result['seq']} tokens, {mode}, AdamW",
            "ours": rows["ours all-linear r=8"]["vs_floor"], "peft": rows["peft all-linear r=8"]["vs_floor"],
            "full": rows["full fine-tuning"]["vs_floor"]}


def speed_answer() -> str:
    m, q = measured_speed(), report.reference_highlights()
    ref = report.REFERENCE_H100
    measured = ("LoRA Lab has no shipped benchmark result to compare with. " if m is None else
                f"Measured by LoRA Lab (python -m lora_core.bench; {m['setting']}): LoRA on all linear layers at "
                f"r = 8 took {m['ours']:.2f}× the frozen floor (PEFT {m['peft']:.2f}×) and full fine-tuning "
                f"{m['full']:.2f}×, so LoRA was {'faster' if m['ours'] < m['full'] else 'not faster'} there. ")
    verdict = "no faster" if q["all_linear_compiled_ms"] >= q["full_compiled_ms"] else "faster"
    return (f"Not necessarily. Forward and backward still run through the whole frozen model; LoRA skips the frozen "
            f"weights' gradients and optimizer update but adds thin matmuls and kernel launches. {measured}"
            f"Quoted, not measured by LoRA Lab ({ref['setting']}, one H100, compiled): LoRA on every linear layer "
            f"{q['all_linear_compiled_ms']} ms against full fine-tuning {q['full_compiled_ms']} ms, {verdict}. "
            f"Which one wins depends on the hardware and the setup; LoRA's sure gains are memory and checkpoint "
            f"size.")


def speed_evidence() -> Evidence:
    t, m, q = training_runs.step_times(), measured_speed(), report.reference_highlights()
    shipped = {} if m is None else {
        "measured (shipped CPU benchmark): LoRA all-linear r=8 / floor": f"{m['ours']:.2f}×",
        "measured (shipped CPU benchmark): full fine-tuning / floor": f"{m['full']:.2f}×"}
    live = {f"measured now: {k}": f"{v:.2f}×" for k, v in t["relative"].items() if k != "frozen base (fwd+bwd)"}
    quoted = {"quoted (H100): LoRA all-linear, compiled": f"{q['all_linear_compiled_ms']} ms",
              "quoted (H100): full fine-tuning, compiled": f"{q['full_compiled_ms']} ms"}
    return Evidence(
        metrics={**shipped, **quoted, **live},
        figure={"kind": "bars", "values": t["ms"], "title": f"Step time on this CPU ({t['params']:,} parameters)",
                "y_title": "ms (best of several)"},
        note=("shipped: results/bench/cpu.json" + (f" ({m['setting']})" if m else "") + f". Quoted: "
              f"{report.REFERENCE_H100['source']}; {report.REFERENCE_H100['setting']}. Measured now: "
              f"teach.training_runs.step_times on {t['threads']} CPU threads"))
