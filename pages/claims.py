"""Claims check: every claim of the seed documents (CLAIMS.md rows 1–23, CLAIMS-2.md rows 24–33), its verdict,
and live evidence, grouped by the file each row comes from.

The verdicts are the project's; the claims are a table (lora_core.teach.claims.table) and the numbers behind
them are computed by lora_core when the page runs: cached afterwards, except the rows that use the real weight
(about a second) or read runs/, which are measured on every run. Row 6 can be measured here: the seed's
4-example setup, fine-tuned.
"""

import streamlit as st

import lora_core as lc
from lora_core.teach import training_runs
from lora_core.teach.claims import check
from pages.common import as_text, base_model
from pages.evidence_view import show_evidence

MODEL = "smollm2-135m"                              # pretrained, offline: real weights for rows 6, 15, 21
REAL_WEIGHT = "model.layers.0.self_attn.q_proj"
BADGE = {"✓": "green", "~": "orange", "✗": "red", "?": "gray"}   # badge colour per verdict
SOURCE_TITLES = {"CLAIMS.md": "CLAIMS.md: rows 1–23", "CLAIMS-2.md": "CLAIMS-2.md: rows 24–33"}  # group headings


@st.cache_resource(show_spinner="Loading SmolLM2-135M for real weights…")
def real_weight():
    """One pretrained weight (read only) for the NF4 and low-rank rows, or None if SmolLM2 is missing."""
    try:
        return base_model(MODEL)[0].get_submodule(REAL_WEIGHT).weight
    except lc.ModelUnavailableError:
        return None


def badge(c: check.ClaimEvidence) -> str:
    return f":{BADGE[c.verdict]}-badge[{c.verdict} {c.verdict_name}]"


st.title("Claims check")
st.markdown("The documents LoRA Lab's users learn from make claims about LoRA. Some are right; several are wrong "
            "or misleading. Each row below states a claim in our words, gives the verdict, and shows the evidence, "
            "computed by `lora_core` when this page runs: counts, forward hooks, merges, quantization errors, toy "
            "training runs. Rows 1–23 come from CLAIMS.md, rows 24–33 from CLAIMS-2.md; the table says which.")

weight = real_weight()
with st.spinner("Computing the evidence for every claim (once per server)…"):
    rows = check.claims_check(weight=weight)

counts = check.verdict_counts(rows)
cols = st.columns(len(counts))
for col, (v, n) in zip(cols, counts.items(), strict=True):
    col.metric(f"{v} {check.VERDICTS[v]}", n)
st.dataframe([{"#": c.row, "file": c.source, "seed": c.seed, "verdict": f"{c.verdict} {c.verdict_name}",
               "claim": c.claim, "key evidence": ": ".join(next(iter(c.evidence.metrics.items()), ()))} for c in rows],
             hide_index=True, width="stretch", height="content",
             column_config={"claim": st.column_config.TextColumn(width="large")})
if weight is None:
    st.caption(f"{MODEL} is not available here, so rows 15 and 21 use a seeded normal matrix only.")
else:
    st.caption(f"Rows 15 and 21 also use a real weight: `{REAL_WEIGHT}` of pretrained SmolLM2-135M-Instruct.")



def seed_bleu_run() -> None:
    """Row 6's button: the seed's own 4-example setup, fine-tuned and scored here."""
    st.markdown(f"**Measure the seed's own setup:** LoRA (r = 8, α = 16, dropout 0.1) on "
                f"{check.SEED_000['train_pairs']} training pairs for "
                f"{check.SEED_000['epochs']} epochs on {MODEL}, then BLEU on held-out prompts. "
                "A minute or more on a CPU: generating the held-out answers is the slow part.")
    if st.button("Run it now", key="claims:bleu"):
        with st.spinner("Fine-tuning and generating…"):
            try:
                model, tok = base_model(MODEL)
                st.session_state["claims:bleu_run"] = training_runs.seed_bleu_experiment(
                    lc.shared_base_copy(model), tok)   # a private tree over the shared frozen base
            except lc.ModelUnavailableError as err:
                st.error(as_text(err), icon="⚠️")
    run = st.session_state.get("claims:bleu_run")
    if run is not None:
        m = st.columns(4)
        m[0].metric("BLEU before (0–100)", f"{run['bleu_before']:.2f}")
        m[1].metric("BLEU after (0–100)", f"{run['bleu_after']:.2f}")
        m[2].metric("held-out loss", f"{run['loss_after']:.3f}", f"{run['loss_change']:.3f}", delta_color="inverse")
        m[3].metric("seconds", f"{run['seconds']:.0f}")
        st.dataframe(run["samples"], hide_index=True, width="stretch")
        st.caption(f"{run['train_pairs']} training pairs, {run['epochs']} epochs, {run['test_pairs']} held-out "
                   "prompts, sacrebleu corpus BLEU. The seed's 0.65 on a 0–1 scale would be 65 here.")


def show_claim(c: check.ClaimEvidence) -> None:
    """One row: its verdict, the truth with live numbers, and the evidence behind it."""
    with st.expander(f"**{c.row}.** {c.verdict} · seed {c.seed}: {c.claim}"):
        st.markdown(badge(c) + f" · from `{c.source}`")
        st.markdown(c.truth)
        show_evidence(c.evidence, f"claim:{c.row}", f"claim:{c.row}:{hash(c.truth)}")
        if c.row == 6:
            seed_bleu_run()


st.header("Row by row")
for source, group in check.by_source(rows).items():
    st.subheader(SOURCE_TITLES.get(source, source))
    for c in group:
        show_claim(c)
