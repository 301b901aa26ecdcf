"""What each paper reports, quoted from its own text and checked, one row per table or figure a replay re-measures.

A replay shows its measurement next to these numbers, so every number here was read in a copy of the source and the
`checked` field says which copy. Where a claim could not be traced to the source text it is kept in words only, and
`checked` says so. The sources:

- LoRA: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv 2106.09685 (v2 text).
- Shuttleworth, Andreas, Torralba, Sharma 2024, "LoRA vs Full Fine-tuning: An Illusion of Equivalence",
  arXiv 2410.21228, and its code at github.com/reeceshuttle/intruder-dimensions.
- Biderman et al. 2024, "LoRA Learns Less and Forgets Less", arXiv 2405.09673.
- Schulman and Thinking Machines Lab 2025, "LoRA Without Regret", https://thinkingmachines.ai/blog/lora/.
"""

from __future__ import annotations

from dataclasses import dataclass

REPLAYS = ("targets", "rank", "subspace", "amplification", "intruders", "forgetting", "learning_rate")


@dataclass(frozen=True)
class Quote:
    replay: str        # one of REPLAYS
    source: str        # paper, authors, year, identifier
    where: str         # the table, figure or section the numbers come from
    setting: str       # the paper's model, task and metric, in a few words
    finding: str       # the finding in one sentence, in our words
    numbers: dict      # {label: value} as printed (floats, or strings such as "~10x"); {} when qualitative
    unit: str          # what the numbers are
    checked: str       # where the numbers were read, or what could not be verified


LORA = "LoRA (Hu et al. 2021), arXiv 2106.09685"
ILLUSION = "LoRA vs Full Fine-tuning: An Illusion of Equivalence (Shuttleworth et al. 2024), arXiv 2410.21228"
BIDERMAN = "LoRA Learns Less and Forgets Less (Biderman et al. 2024), arXiv 2405.09673"
REGRET = "LoRA Without Regret (Schulman and Thinking Machines Lab 2025), thinkingmachines.ai/blog/lora"

# Two stored copies of the arXiv v2 text of the LoRA paper were read; both give the same numbers.
LORA_TEXT = ("Read in the arXiv v2 text stored as digitalsorc/prompt-docs-jules-co "
             "converted-documents/lora-low-rank-adaptation.md (commit 5ae732bc)")
LORA_TEXT_2 = "and in a second stored markdown copy of the v2 text (search index file 58614264550)"
REGRET_TEXT = ("Read in a stored copy of https://thinkingmachines.ai/blog/lora/ (search index file 62489865606; the "
               "same sentences in a second copy, file 43143953578)")

_T5_LABELS = ("Wq (r=8)", "Wk (r=8)", "Wv (r=8)", "Wo (r=8)", "Wq,Wk (r=4)", "Wq,Wv (r=4)", "Wq,Wk,Wv,Wo (r=2)")
_T6_RANKS = (1, 2, 4, 8, 64)
_T6_SETS = ("Wq", "Wq,Wv", "Wq,Wk,Wv,Wo")
_T18_RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _table6(rows: tuple[tuple[float, ...], ...]) -> dict:
    """Table 6 as {"Wq,Wv r=4": value}: one row per weight set, one column per rank."""
    return {f"{name} r={r}": v for name, row in zip(_T6_SETS, rows, strict=True) for r, v in zip(_T6_RANKS, row,
                                                                                                   strict=True)}


QUOTES: tuple[Quote, ...] = (
    # ---- targets: which weights to adapt at a fixed budget ------------------------------------------------------
    Quote("targets", LORA, "Table 5 (Section 7.1)",
          "GPT-3 175B, 18M trainable parameters in all 96 layers, WikiSQL validation accuracy",
          "At the same budget, spreading the rank over two or four attention matrices beats putting it all in Wq or "
          "Wk; Wq,Wv at r=4 and all four at r=2 tie for best.",
          dict(zip(_T5_LABELS, (70.4, 70.0, 73.0, 73.2, 71.4, 73.7, 73.7), strict=True)),
          "WikiSQL validation accuracy % (seed spread ±0.5%)",
          f"{LORA_TEXT} {LORA_TEXT_2}; the same row is in the speakerdeck.com slides 'lora-low-rank-adaptation-of-"
          "large-language-models' text. Matches the brief."),
    Quote("targets", LORA, "Table 5 (Section 7.1)",
          "GPT-3 175B, 18M trainable parameters in all 96 layers, MultiNLI-matched validation accuracy",
          "On MultiNLI the differences are small; all four matrices at r=2 is best.",
          dict(zip(_T5_LABELS, (91.0, 90.8, 91.0, 91.3, 91.3, 91.3, 91.7), strict=True)),
          "MultiNLI validation accuracy % (seed spread ±0.1%)",
          f"{LORA_TEXT} {LORA_TEXT_2}. Matches the brief."),
    # ---- rank: r sweep -----------------------------------------------------------------------------------------
    Quote("rank", LORA, "Table 6 (Section 7.2)",
          "GPT-3 175B, LoRA on Wq, on Wq,Wv, or on all four attention matrices, WikiSQL validation accuracy",
          "Adapting Wq,Wv is already competitive at r=1; Wq alone needs a larger r, and r=64 does not help.",
          _table6(((68.8, 69.6, 70.5, 70.4, 70.0), (73.4, 73.3, 73.7, 73.8, 73.5), (74.1, 73.7, 74.0, 74.0, 73.9))),
          "WikiSQL validation accuracy % (seed spread ±0.5%)",
          f"{LORA_TEXT}. The table has no r=16 column."),
    Quote("rank", LORA, "Table 6 (Section 7.2)",
          "GPT-3 175B, LoRA on Wq, on Wq,Wv, or on all four attention matrices, MultiNLI validation accuracy",
          "On MultiNLI every rank from 1 to 64 lands within about a point.",
          _table6(((90.7, 90.9, 91.1, 90.7, 90.7), (91.3, 91.4, 91.3, 91.6, 91.4), (91.2, 91.7, 91.7, 91.5, 91.4))),
          "MultiNLI validation accuracy % (seed spread ±0.1%)",
          f"{LORA_TEXT}."),
    Quote("rank", LORA, "Table 18 (Appendix H.2)",
          "GPT-2 Medium on the E2E NLG Challenge, 26,000 steps, validation loss",
          "Validation loss falls from r=1 to r=16 and is flat after; the paper puts GPT-2 Medium's best rank between "
          "4 and 16 depending on the metric.",
          {f"r={r}": v for r, v in zip(_T18_RANKS, (1.23, 1.21, 1.18, 1.17, 1.16, 1.16, 1.16, 1.16, 1.16, 1.16,
                                                     1.17), strict=True)},
          "validation loss (nats per token)",
          f"{LORA_TEXT} {LORA_TEXT_2}. The caption notes some hyperparameters were tuned at r=4."),
    Quote("rank", LORA, "Table 18 (Appendix H.2)",
          "GPT-2 Medium on the E2E NLG Challenge, test set BLEU",
          "BLEU peaks at r=4 (70.38) and every rank from 1 to 1024 stays within 1.7 BLEU of it.",
          {f"r={r}": v for r, v in zip(_T18_RANKS, (68.72, 69.17, 70.38, 69.57, 69.61, 69.33, 69.24, 68.73, 68.92,
                                                     68.78, 69.37), strict=True)},
          "BLEU (E2E test set)",
          f"{LORA_TEXT} {LORA_TEXT_2}. NIST, METEOR, ROUGE-L and CIDEr are in the same table, not quoted here."),
    Quote("rank", LORA, "Table 3 (Section 5.4)",
          "GPT-2 Medium on the E2E NLG Challenge, test set BLEU",
          "LoRA with 0.35M trainable parameters scores above full fine-tuning of all 354.92M.",
          {"GPT-2 M full fine-tuning (354.92M)": 68.2, "GPT-2 M LoRA (0.35M)": 70.4},
          "BLEU (E2E test set; LoRA ±0.1 over seeds)",
          f"{LORA_TEXT}. The fine-tuning row is a number the paper takes from prior work (marked *)."),
    # ---- subspace: φ between ranks and between seeds -----------------------------------------------------------
    Quote("subspace", LORA, "Figure 3 (Section 7.2), Equation 4",
          "GPT-3 175B layer 48 of 96, A matrices of ΔWq and ΔWv at r=8 and r=64, normalized subspace similarity φ",
          "Only the top singular direction is shared between the r=8 and r=64 adapters; the other directions of "
          "r=8 are mostly not in r=64, which the paper reads as noise and as why r=1 works.",
          {"dimension of the shared subspace": 1.0, "φ of that shared direction exceeds": 0.5},
          "φ(A_r=8, A_r=64, i, j), 0 (orthogonal) to 1 (same span)",
          f"{LORA_TEXT} {LORA_TEXT_2}: 'share a subspace of dimension 1 with normalized similarity > 0.5'. Other "
          "cells are only drawn as a heat map; no further values are printed."),
    Quote("subspace", LORA, "Figure 4 (Section 7.2)",
          "GPT-3 175B layer 48, A of ΔWq and ΔWv at r=64 from two random seeds, φ; two random Gaussian matrices",
          "Two seeds share more top directions for ΔWq than for ΔWv (ΔWq has a higher intrinsic rank), while two "
          "random Gaussian matrices share none.",
          {},
          "φ (heat map, no printed values)",
          f"{LORA_TEXT}. Qualitative: the figure prints no values; its colour scale runs 0 to 0.5."),
    # ---- amplification: ||ΔW|| against ||U^T W V^T|| ----------------------------------------------------------
    Quote("amplification", LORA, "Table 7 (Section 7.3)",
          "GPT-3 175B layer 48, Wq projected on the top r=4 singular directions of ΔWq, of Wq, or of a random matrix",
          "Wq has far less weight in ΔWq's directions than in its own top directions, but more than in random ones.",
          {"||U^T Wq V^T||_F, U,V of ΔWq": 0.32, "||U^T Wq V^T||_F, U,V of Wq": 21.67,
           "||U^T Wq V^T||_F, U,V random": 0.02, "||ΔWq||_F": 6.91, "||Wq||_F": 61.95},
          "Frobenius norm",
          f"{LORA_TEXT} {LORA_TEXT_2}. Matches the brief."),
    Quote("amplification", LORA, "Table 7 (Section 7.3)",
          "GPT-3 175B layer 48, the same projections with r=64",
          "At r=64 the update overlaps Wq's strong directions more and is smaller.",
          {"||U^T Wq V^T||_F, U,V of ΔWq": 1.90, "||U^T Wq V^T||_F, U,V of Wq": 37.71,
           "||U^T Wq V^T||_F, U,V random": 0.33, "||ΔWq||_F": 3.57, "||Wq||_F": 61.95},
          "Frobenius norm",
          f"{LORA_TEXT} {LORA_TEXT_2}. Matches the brief."),
    Quote("amplification", LORA, "Section 7.3 and Appendix H.4",
          "GPT-3 175B layer 48, amplification factor ||ΔWq||_F / ||U^T Wq V^T||_F with U,V from ΔWq",
          "A rank-4 update amplifies directions Wq holds only weakly about twentyfold; at r=64 the factor is about 2.",
          {"r=4": 21.5, "r=64": "around 2"},
          "ratio of Frobenius norms",
          f"{LORA_TEXT} {LORA_TEXT_2}: '21.5 ≈ 6.91/0.32 for r = 4' (H.4 also says 'as large as 20'); for r=64 H.4 "
          "says 'only around 2'. The brief's 1.9 for r=64 is not printed: 3.57/1.90 = 1.88 is our arithmetic."),
    Quote("amplification", LORA, "Figure 8 (Appendix H.3)",
          "GPT-3 175B, φ between the singular directions of Wq and of ΔWq for r=4, 8, 64 and a random baseline",
          "ΔWq does not contain Wq's top directions: its top 4 barely overlap the top 10% of Wq's.",
          {"φ, top-4 ΔWq directions vs top-10% Wq directions": "barely exceeds 0.2"},
          "φ",
          f"{LORA_TEXT} {LORA_TEXT_2}."),
    # ---- intruders -----------------------------------------------------------------------------------------------
    Quote("intruders", ILLUSION, "Algorithm 1 and the authors' code",
          "Singular vectors of W0 + ΔW against those of W0: a top-k fine-tuned vector whose largest |cosine| with "
          "every pre-trained vector is below ε is an intruder dimension",
          "The count is taken over the top k singular vectors of each fine-tuned matrix with a fixed ε.",
          {"ε (code default)": 0.5, "k (code default)": 10.0},
          "cosine similarity threshold; number of fine-tuned singular vectors examined",
          "Algorithm 1 (inputs ε and k) read in the paper's reproducibility summary at ri.k117.org (NeurIPS 2025 "
          "entry). ε=0.5 and k=10 are the defaults of find_intruder_dimensions.py in reeceshuttle/intruder-"
          "dimensions (commit 43d16930), which compares left singular vectors U; its README runs ε=0.5. Could not "
          "verify which ε values the paper's figures sweep, nor per-rank counts: stated qualitatively."),
    Quote("intruders", ILLUSION, "Abstract (v1 and v3)",
          "LLaMA2-7B (Figure 1) and RoBERTa-base (the authors' code), LoRA against full fine-tuning",
          "LoRA creates new high-ranking singular vectors (intruder dimensions) that full fine-tuning does not; "
          "higher-rank, rank-stabilized LoRA looks more like full fine-tuning.",
          {},
          "qualitative",
          "Abstracts read at arxiv.org/abs/2410.21228v2 and arxiv.org/html/2410.21228v1 (stored pages). A NeurIPS "
          "reviewer (paperhub.cn) notes that in Appendix J LoRA at r=64 has fewer intruders than full fine-tuning; "
          "not checked against the paper."),
    Quote("intruders", ILLUSION, "Abstract (v3)",
          "Scaling the singular values of intruder dimensions after fine-tuning, pre-training loss and test accuracy",
          "Shrinking the intruder dimensions lowers forgetting of the pre-training distribution with little loss of "
          "task accuracy.",
          {"example scale factor": 0.7},
          "multiplier on the intruder singular values",
          "The finding is in the v3 abstract (arxiv.org/abs/2410.21228v2 page lists v3). The 0.7x example is from the "
          "first author's own post, mirrored at muskviewer.com/ReeceShuttle; not seen in the paper text."),
    # ---- forgetting ----------------------------------------------------------------------------------------------
    Quote("forgetting", BIDERMAN, "Abstract and Section 4.5",
          "Code and math, continued pretraining and instruction fine-tuning, spectrum of full fine-tuning's ΔW",
          "Full fine-tuning learns weight perturbations of far higher rank than the LoRA ranks people use.",
          {"rank of full fine-tuning's perturbation vs typical LoRA": "10-100x"},
          "ratio of ranks",
          "Abstract read at catalyzex.com/paper/lora-learns-less-and-forgets-less and scholarfeed.org/paper/"
          "2405.09673v2. Could not verify the per-module ranks needed to explain 90% of ΔW's variance in the paper "
          "text: a blog summary (leonericsson.github.io, 2024-05-20) gives about 1000-2000 for attention and 2000-2800 "
          "for MLP on 4096x4096 matrices; not quoted."),
    Quote("forgetting", BIDERMAN, "Abstract, Sections 4.1-4.3",
          "LoRA vs full fine-tuning on code (HumanEval) and math (GSM8K); forgetting on source-domain benchmarks",
          "LoRA learns less of the target domain but keeps more of the base model's ability outside it, and the two "
          "methods lie on one learning-forgetting Pareto curve.",
          {"LoRA ranks compared": "16 and 256", "target modules compared": "Attention, MLP, All",
           "instruction fine-tuning data": "~100K prompt-response pairs", "continued pretraining data": "20B tokens"},
          "experimental setting",
          "Abstract v2 (scholarfeed.org) gives ~100K pairs and 20B tokens (the v1 abstract at catalyzex.com says "
          "~10B); the ranks and modules are in the Section 4.1 text reproduced at kodingstuck.site (2025/06). "
          "HumanEval and GSM8K measure learning, not forgetting; the forgetting benchmarks were not verified here."),
    # ---- learning_rate -------------------------------------------------------------------------------------------
    Quote("learning_rate", REGRET, "'Optimal learning rates for LoRA vs. FullFT' and 'short and long runs'",
          "Llama 3 and Qwen3 models, Tulu3 and OpenThoughts3 (supervised) and MATH/GSM (RL), constant LR, alpha=32",
          "LoRA's best learning rate is about ten times full fine-tuning's, a little more for very short runs.",
          {"best LoRA LR / best FullFT LR": "10x", "fitted multiplier (14 Llama and Qwen models, Tulu3)": 9.8,
           "short runs (under ~100 steps)": "~15x"},
          "ratio of optimal learning rates",
          f"{REGRET_TEXT}. The post cites Biderman et al. (2024) Figure S1 for a similar 10x ratio. "
          "Matches the brief."),
    Quote("learning_rate", REGRET, "'LoRA rank' section",
          "LR sweeps per rank, rank 1 to 512",
          "The best LR barely depends on rank (the 1/r prefactor), slightly lower only at rank 1.",
          {"change of optimal LR between rank=4 and rank=512": "less than 2x"},
          "ratio of optimal learning rates",
          f"{REGRET_TEXT}."),
    Quote("learning_rate", REGRET, "'Layers Where LoRA Is Applied' and its parameter table",
          "Llama-3.1-8B on Tulu3 (also OpenThoughts3 subset at rank 256 and RL on MATH)",
          "Attention-only LoRA underperforms MLP-only LoRA even at equal parameter count (attention r=256 against "
          "MLP r=128); adding attention to MLP brings no further gain.",
          {"mlp, rank=256": 0.49, "attn, rank=256": 0.25, "all, rank=256": 0.70, "mlp, rank=128": 0.24},
          "LoRA trainable parameters, billions (Llama-3.1-8B)",
          f"{REGRET_TEXT}; the findings list is also quoted in lqdev/luisquintanilla.me "
          "_src/bookmarks/lora-without-regret.md. Matches the brief."),
)


def quotes_for(replay: str) -> list[Quote]:
    """The quotes of one replay; ValueError naming the replay and the allowed names if unknown."""
    if replay not in REPLAYS:
        raise ValueError(f"replay={replay!r} is not allowed: use one of {', '.join(REPLAYS)}")
    return [q for q in QUOTES if q.replay == replay]
