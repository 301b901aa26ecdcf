"""Activation memory of one training step: the tensors autograd saves for backward, named site by site.

Korthikanti et al. 2022 (arXiv 2205.05198, §4.1, eq. 1) count what a GPT-style block keeps, in 16-bit
bytes: attention 11sbh + 5as²b (Q/K/V input 2sbh, Q and K 4sbh, softmax 2as²b, its dropout mask as²b,
the dropout output 2as²b, V 2sbh, out-projection input 2sbh, dropout mask sbh), MLP 19sbh (fc1 input
2sbh, GeLU input 8sbh, fc2 input 8sbh, mask sbh) and two LayerNorm inputs 4sbh: sbh(34 + 5as/h).
We keep that decomposition as named sites and ask of each one whether autograd keeps it here:

* A Linear (or GPT-2 Conv1D) saves its input only for its weight's gradient. A frozen projection keeps
  nothing, unless a LoRA A reads the same tensor. A reads x itself only when the factors share the
  activation dtype (fp32 training) and there is no LoRA dropout. PEFT casts x to A's dtype first, so
  with a 16-bit base every branch keeps its own fp32 copy, s·b·in·4. With dropout it keeps the dropped
  copy plus a 1-byte mask, s·b·in·(4 + 1). Every branch also keeps A's output for B's gradient, s·b·r·4.
* Nothing upstream of the first trainable tensor needs a gradient: with LoRA, the layers before the
  first adapted one keep nothing, and in that layer neither do the sites ahead of its first adapter.
  Frozen side paths in that one layer are still counted: with up_proj alone, layer 0 keeps neither
  the SiLU input nor up's output, and we count both.
* Llama-style blocks (SwiGLU MLP, RMSNorm, no dropout, grouped-query attention) get the analogous list,
  our own derivation from transformers' LlamaDecoderLayer with eager attention, checked by hooking
  autograd on a tiny model: each RMSNorm keeps its input upcast to fp32 (s·b·h·4), plus the normalized
  x in the compute dtype when its weight trains. Q, K and V: eager attention repeats K and V to all a
  heads (repeat_kv copies), so all three are q = a·head_dim wide. The softmax runs in fp32 (a·s²·b·4),
  and its cast to the compute dtype is kept too when that is 16-bit. The MLP keeps the gate/up input
  (shared), the SiLU input, the SiLU output and up's output (the product's inputs), and down_proj's
  input, f = intermediate_size wide.
* FlashAttention (arXiv 2205.14135) keeps no s×s tensor, saves K and V at their own kv width, and keeps
  the attention output, which is the out-projection's input, whether that projection trains or not.
* After the last layer: the final norm's input, lm_head's input (when lm_head trains or carries LoRA),
  and s·b·V·(d + 4) for the logits the loss returns and the fp32 log-softmax it saves.

Left out (each under 1% of a layer): LayerNorm's mean/rstd and RMSNorm's rsqrt (s·b·4 each),
FlashAttention's logsumexp (s·b·a·4), the embedding dropout mask, RoPE's cos/sin tables.
transformers' GPT-2 computes gelu_new from several elementwise ops, so it saves more f-wide tensors
than the paper's one GeLU input. On CPU, dropout keeps a mask in the activation dtype, not 1 byte,
and lora_core's fused CPU path (fused.py) lets A read the 16-bit x itself instead of an fp32 copy.
Checked against autograd's saved tensors (tiny GPT-2 with exact GeLU, tiny Llama, fp32 and bf16, full
FT and LoRA on each projection): within 1.5%, the left-out items above, except the side-path case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

ADAPTER_BYTES = 4  # LoRA factors train in fp32 (PEFT's autocast_adapter_dtype), so A's input and output are fp32
MASK_BYTES = 1     # a dropout mask on CUDA is one bool per element
ROLES = {  # module path inside a block -> the input it reads
    "attn.c_attn": "qkv", "attn.c_proj": "out", "mlp.c_fc": "mlp_in", "mlp.c_proj": "mlp_out",
    "self_attn.q_proj": "qkv", "self_attn.k_proj": "qkv", "self_attn.v_proj": "qkv", "self_attn.o_proj": "out",
    "mlp.gate_proj": "mlp_in", "mlp.up_proj": "mlp_in", "mlp.down_proj": "mlp_out",
}


@dataclass(frozen=True)
class Block:
    """The shapes the activation sites depend on, read from the model built on the meta device."""

    family: str          # "gpt" (Korthikanti's block: GeLU MLP, LayerNorm, dropout) | "llama" (SwiGLU, RMSNorm)
    layers: int
    hidden: int          # h
    heads: int           # a
    q_width: int         # a·head_dim (= h for both families as shipped)
    kv_width: int        # num_key_value_heads·head_dim
    ffn: int             # f: the MLP's inner width
    vocab: int
    attn_dropout: bool   # dropout on the attention probabilities
    resid_dropout: bool  # dropout after the out-projection and after the MLP (GPT)


@dataclass(frozen=True)
class Site:
    """One tensor autograd keeps per token: `width` elements of `nbytes` bytes (a·s wide for s×s scores)."""

    name: str
    symbol: str               # the width in the formula: "h", "f", "a·s", ...
    width: int
    nbytes: int
    role: str | None = None   # the projection this is the input of: kept only if it trains or A reads it
    norm_weight: bool = False  # the normalized x a norm keeps for its weight's gradient: full FT only


@dataclass(frozen=True)
class Branch:
    """One LoRA pair: which layer (None outside the blocks), the input it reads, its in_features."""

    layer: int | None
    role: str                 # a key of ROLES' values, or "embed" / "head"
    in_features: int


def block_of(meta: nn.Module) -> Block:
    """The block family and widths of a model built on the meta device."""
    c, names = meta.config, {n for n, _ in meta.named_modules()}
    h, a, L = c.hidden_size, c.num_attention_heads, c.num_hidden_layers
    if any(n.endswith(".0.mlp.gate_proj") for n in names):
        head_dim = getattr(c, "head_dim", None) or h // a
        kv = getattr(c, "num_key_value_heads", None) or a
        return Block("llama", L, h, a, a * head_dim, kv * head_dim, c.intermediate_size, c.vocab_size,
                     getattr(c, "attention_dropout", 0.0) > 0, False)
    if any(n.endswith(".0.attn.c_attn") for n in names):
        return Block("gpt", L, h, a, h, h, getattr(c, "n_inner", None) or 4 * h, c.vocab_size,
                     c.attn_pdrop > 0, c.resid_pdrop > 0)
    raise ValueError(f"model={getattr(c, 'model_type', '?')!r}: activation sites are known for GPT-2-style "
                     "(attn.c_attn) and Llama-style (mlp.gate_proj) blocks only")


def branch_of(name: str, module: nn.Module, meta: nn.Module) -> Branch:
    """Where a wrapped module sits and which input its A reads."""
    if (m := re.search(r"\.(\d+)\.(.+)$", name)) and m.group(2) in ROLES:
        return Branch(int(m.group(1)), ROLES[m.group(2)], module.in_features)
    if isinstance(module.base_layer, nn.Embedding):
        return Branch(None, "embed", 0)       # A is looked up by token id: no input to keep
    if module.base_layer is meta.get_output_embeddings():
        return Branch(None, "head", module.in_features)
    raise ValueError(f"target_modules: {name!r} is outside the blocks whose activations this estimate knows")


def layer_sites(blk: Block, s: int, d: int, flash: bool) -> list[Site]:
    """The sites of one block in forward order, for s tokens and d bytes per activation."""
    h, f, q, kv, a = blk.hidden, blk.ffn, blk.q_width, blk.kv_width, blk.heads
    k_w, k_sym = (kv, "kv") if flash and blk.family == "llama" else (q, "q")
    scores, out = [], Site("out-proj input", "q", q, d, "out")
    if flash:  # the kernel keeps its output (the out-projection's input) and no s×s tensor
        out = Site("attention output = out-proj input (kept by FlashAttention)", "q", q, d)
    if blk.family == "gpt":
        if not flash:
            scores = [Site("softmax output", "a·s", a * s, d)]
            if blk.attn_dropout:
                scores += [Site("softmax dropout mask", "a·s", a * s, MASK_BYTES),
                           Site("softmax dropout output", "a·s", a * s, d)]
        mask = [Site("dropout mask", "h", h, MASK_BYTES)] if blk.resid_dropout else []
        return [Site("LayerNorm 1 input", "h", h, d), Site("QKV input", "h", h, d, "qkv"),
                Site("Q, K", "2h", 2 * h, d), *scores, Site("V", "h", h, d), out, *mask,
                Site("LayerNorm 2 input", "h", h, d), Site("fc1 input", "h", h, d, "mlp_in"),
                Site("GeLU input", "f", f, d), Site("fc2 input", "f", f, d, "mlp_out"), *mask]
    if not flash:
        scores = [Site("softmax output (fp32)", "a·s", a * s, 4)]
        if blk.attn_dropout:
            scores += [Site("attention dropout mask", "a·s", a * s, MASK_BYTES),
                       Site("attention dropout output", "a·s", a * s, d)]
        elif d != 4:
            scores += [Site("softmax probabilities in 16 bits (for ·V)", "a·s", a * s, d)]
    return [Site("input RMSNorm input (fp32)", "h", h, 4), Site("input RMSNorm normalized x", "h", h, d,
                                                                norm_weight=True),
            Site("q/k/v input", "h", h, d, "qkv"), Site("Q", "q", q, d), Site("K", k_sym, k_w, d), *scores,
            Site("V", k_sym, k_w, d), out,
            Site("post-attention RMSNorm input (fp32)", "h", h, 4),
            Site("post-attention RMSNorm normalized x", "h", h, d, norm_weight=True),
            Site("gate/up input", "h", h, d, "mlp_in"), Site("SiLU input", "f", f, d),
            Site("SiLU output", "f", f, d), Site("up output", "f", f, d), Site("down_proj input", "f", f, d, "mlp_out")]


def final_sites(blk: Block, d: int) -> list[Site]:
    """After the last block: the final norm and lm_head's input."""
    h = blk.hidden
    if blk.family == "gpt":
        return [Site("final LayerNorm input", "h", h, d), Site("lm_head input", "h", h, d, "head")]
    return [Site("final RMSNorm input (fp32)", "h", h, 4), Site("final RMSNorm normalized x", "h", h, d,
                                                                 norm_weight=True),
            Site("lm_head input", "h", h, d, "head")]


def kept_sites(sites: list[Site], branches: list[Branch], *, full: bool, d: int, dropout: float,
               first: bool) -> list[Site]:
    """The sites autograd keeps: a projection's input only if it trains or an A reads x itself.

    `first`: this is the first part of the network a gradient reaches (LoRA), so sites ahead of its
    first adapted projection keep nothing.
    """
    shared = {br.role for br in branches} if dropout == 0 and d == ADAPTER_BYTES else set()
    adapted = {br.role for br in branches}
    start = next((i for i, st in enumerate(sites) if st.role in adapted), len(sites)) if first and not full else 0
    return [st for st in sites[start:]
            if (full or not st.norm_weight) and (st.role is None or full or st.role in shared)]


def branch_bytes(br: Branch, tokens: int, r: int, d: int, dropout: float) -> int:
    """What one LoRA pair keeps: A's output for B's gradient, and its own copy of x when it has one."""
    own = 0
    if br.role != "embed":
        own = ADAPTER_BYTES + MASK_BYTES if dropout > 0 else (ADAPTER_BYTES if d != ADAPTER_BYTES else 0)
    return tokens * (r * ADAPTER_BYTES + br.in_features * own)


def _text(sites: list[Site]) -> str:
    return " + ".join(f"{st.name} s·b·{st.symbol}·{st.nbytes}" for st in sites) or "nothing"


def _branch_text(brs: list[Branch], r: int, d: int, dropout: float) -> str:
    own = "" if all(br.role == "embed" for br in brs) else (
        f" + in·{ADAPTER_BYTES + MASK_BYTES} (dropped fp32 x + mask)" if dropout > 0
        else (f" + in·{ADAPTER_BYTES} (its fp32 copy of x)" if d != ADAPTER_BYTES else " (x itself, shared)"))
    ins = "+".join(str(br.in_features) for br in brs)
    return f"{len(brs)} LoRA branch(es), s·b·(r·{ADAPTER_BYTES}{own}), in = {ins}"


def activation_bytes(blk: Block, branches: list[Branch], *, s: int, b: int, d: int, r: int, dropout: float,
                     full: bool, flash: bool, checkpointing: bool) -> tuple[int, str]:
    """Bytes autograd keeps for one step, and the formula with every number filled in.

    `branches` is empty for full fine-tuning, where every projection trains and keeps its input.
    """
    tokens = s * b
    by_layer: dict[int | None, list[Branch]] = {}
    for br in branches:
        by_layer.setdefault(br.layer, []).append(br)
    outside = by_layer.pop(None, [])
    embed = any(br.role == "embed" for br in outside)
    first = 0 if full or embed else min(by_layer, default=blk.layers)
    sites = layer_sites(blk, s, d, flash)
    groups: dict[tuple, list[int]] = {}       # (kept site names, branch text, bytes) -> layer indices
    for i in range(blk.layers):
        brs = by_layer.get(i, [])
        kept = [] if i < first else kept_sites(sites, brs, full=full, d=d, dropout=dropout,
                                               first=i == first and not full and not embed)
        nbytes = tokens * sum(st.width * st.nbytes for st in kept) + sum(
            branch_bytes(br, tokens, r, d, dropout) for br in brs)
        key = (_text(kept), _branch_text(brs, r, d, dropout) if brs else "", nbytes,
               ", ".join(st.name for st in sites if st not in kept))
        groups.setdefault(key, []).append(i)

    fin = kept_sites(final_sites(blk, d), [br for br in outside if br.role == "head"], full=full, d=d,
                     dropout=dropout, first=not full and not embed and not by_layer)
    tail = tokens * sum(st.width * st.nbytes for st in fin) + sum(
        branch_bytes(br, tokens, r, d, dropout) for br in outside)
    logits = tokens * blk.vocab * (d + 4)
    if checkpointing:  # every block's input, plus the most expensive block while it is recomputed
        layer_total = blk.layers * tokens * blk.hidden * d + max(key[2] for key in groups)
    else:
        layer_total = sum(key[2] * len(ids) for key, ids in groups.items())

    parts = []
    for (kept_text, br_text, nbytes, not_kept), ids in groups.items():
        span = f"layer {ids[0]}" if len(ids) == 1 else f"layers {ids[0]}–{ids[-1]} (×{len(ids)})"
        if ids != list(range(ids[0], ids[-1] + 1)):
            span = f"layers {', '.join(map(str, ids))} (×{len(ids)})"
        if not nbytes:
            parts.append(f"{span}: nothing (no gradient reaches them)")
            continue
        parts.append(f"{span}: {kept_text}" + (f"; {br_text}" if br_text else "") + f" = {nbytes:,} B each"
                     + (f" [not kept: {not_kept}]" if not_kept else ""))
    head = (f"L·s·b·h·{d} (block inputs) + the largest block below, recomputed in backward; "
            if checkpointing else "")
    family = ("Korthikanti et al. eq. 1 sites" if blk.family == "gpt"
              else "Llama-style sites, our derivation from transformers' LlamaDecoderLayer")
    text = (f"{head}{family}: " + "; ".join(parts)
            + f"; after the blocks: {_text(fin)} + s·b·V·({d}+4) (logits + the loss's fp32 log-softmax)"
            + (f"; {_branch_text(outside, r, d, dropout)}" if outside else "")
            + f"; s={s}, b={b}, h={blk.hidden}, q={blk.q_width}, kv={blk.kv_width}, f={blk.ffn}, a={blk.heads}, "
              f"L={blk.layers}, V={blk.vocab}, r={r}")
    return layer_total + tail + logits, text
