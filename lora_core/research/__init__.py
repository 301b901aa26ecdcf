"""Research replays: what LoRA papers found, re-measured on a real pretrained model (SmolLM2-135M-Instruct).

    python -m lora_core.replay list
    python -m lora_core.replay run rank --quick --out results/replay

Seven named experiments (`experiments.EXPERIMENTS`), each a sweep of short fine-tunes on a generated E2E-style
data-to-text task (`e2e.py`), scored like the LoRA paper's GPT-2 tables with multi-reference BLEU (sacrebleu),
held-out loss, and the perplexity of unrelated English (forgetting). The analyses of the trained updates (φ,
amplification, intruder dimensions, effective rank) are in `analysis.py`; what each paper reports, quoted and
checked, is in `papers.py`; each result is written with its provenance by `record.py`.

This package uses the library and is never imported by it.
"""
