"""The claims check as data: one `Claim` per row of CLAIMS.md (1–23) and CLAIMS-2.md (24–33), each with the
function that measures its truth.

A teacher reads a claim, its verdict and where its evidence comes from on one entry. To add a claim,
write a function that returns (the truth in words, Evidence) in counts.py, measured.py or libraries.py
(rows 1–23), second.py or second_measured.py (rows 24–33), or a new module beside them, and add one
entry to CLAIMS with the file it comes from as `source`.

Verdicts: ✓ right, ~ partly right, ✗ wrong, ? unverified (measure it). The verdicts are the
project's; every number behind them is computed by lora_core when asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..evidence import Evidence
from . import counts, libraries, measured, second, second_measured

VERDICTS = {"✓": "right", "~": "partly right", "✗": "wrong", "?": "unverified: measure it"}
# What a measure function may take, besides nothing: a real weight matrix, or the folder of saved runs.
INPUTS = ("weight", "runs_dir")


@dataclass(frozen=True)
class Claim:
    """One claim of a seed document, the project's verdict on it, and how its truth is measured."""

    row: int                # the row number in `source`, unique across sources
    seed: str               # which seed document makes the claim ("000" … "004")
    claim: str              # what it says, in our words
    verdict: str            # one of VERDICTS
    measure: Callable[..., tuple[str, Evidence]]  # returns (the truth in words, with numbers; its Evidence)
    qualifier: str = ""     # where the verdict applies, e.g. "on GPT-2"
    inputs: tuple[str, ...] = ()   # which of INPUTS `measure` takes as keywords
    source: str = "CLAIMS.md"      # the file the row comes from


C = Claim
CLAIMS: tuple[Claim, ...] = (
    C(1, "000", "LoRA at r=8 on distilgpt2's c_attn trains about 98,304 parameters, 0.12% of its 82M.", "✗",
      counts.count_c_attn_r8),
    C(2, "000", "A rank-8 pair on a 768×768 matrix costs 768·8 + 8·768 = 12,288 parameters, about 2% of the "
                "matrix's 589,824.", "✓", counts.square_matrix_pair),
    C(3, "000", "lora_dropout=0.1 sets 10% of the entries of A and B to zero.", "✗",
      measured.dropout_hits_x_not_a_or_b),
    C(4, "000", "The wrong task_type would cause errors or poor performance.", "~", libraries.task_type_wrappers),
    C(5, "000", "Set α to 2r or 4r, as the LoRA papers do.", "~", measured.alpha_sweep_at_one_lr),
    C(6, "000", "Fine-tuning on 4 examples for 5 epochs reaches a BLEU of about 0.65.", "?",
      measured.bleu_of_saved_runs, inputs=("runs_dir",)),
    C(7, "000", "Merged LoRA weights serve with zero inference overhead.", "✓", measured.merged_logits_and_latency),
    C(8, "001", "A starts as random Gaussian numbers and B as zeros, so ΔW = 0 at the start.", "~",
      measured.init_of_a_and_b),
    C(9, "001", "PEFT's defaults are r=8, lora_alpha=8 and lora_dropout=0.", "✓", libraries.peft_default_config),
    C(10, "001", "Under Adam, tuning α is roughly the same as tuning the learning rate.", "✓",
      measured.alpha_against_lr_under_adam),
    C(11, "001", "The regex `\\((\\w+)\\): Linear` over print(model) lists every linear layer.", "✗",
      counts.regex_against_all_linear, qualifier="on GPT-2"),
    C(12, "001", "loralib supports only nn.Linear, nn.Embedding and nn.Conv2d.", "~", counts.loralib_layer_classes),
    C(13, "001", "Its LoraConfig code example is ready to run.", "✗", libraries.seed_001_config_syntax),
    C(14, "002", "A QLoRA recipe with r=64 and lora_alpha=16.", "✓", measured.scale_of_r64_alpha16, qualifier="note"),
    C(15, "002", "NF4 represents weights with logarithmic scaling.", "✗", libraries.nf4_quantiles_not_log,
      inputs=("weight",)),
    C(16, "002", "QLoRA saves memory partly by training only a few of the model's layers.", "✗",
      counts.qlora_lora_in_every_layer),
    C(17, "002", "SFTTrainer comes from Hugging Face's PEFT library.", "✗", libraries.home_of_sfttrainer),
    C(18, "002", "bf16 is better for training on new GPUs; fp32 is more precise but uses more memory.", "✓",
      libraries.bf16_against_fp32),
    C(19, "003", "A LoRA layer computes W(x) + A @ B @ x, and only A and B train.", "~",
      counts.ba_notation_against_peft),
    C(20, "003", "Add lm_head to target_modules for a 'deep modification'.", "~", counts.lm_head_as_a_target),
    C(21, "004", "Use the product W_A·W_B as an approximation of W.", "✗", measured.product_approximates_update,
      inputs=("weight",)),
    C(22, "004", "LoRA fine-tunes only a subset of the parameters that matter for the task.", "✗",
      counts.lora_adds_parameters),
    C(23, "004", "Adapting to a new task has a low intrinsic dimension (Aghajanyan et al. 2020).", "✓",
      measured.spectrum_of_updates, inputs=("runs_dir",)),
    # CLAIMS-2.md
    C(24, "000", "task_type can be 'TOKEN_CLASSIFICATION', 'SEQ_2_SEQ_LM' or 'CAUSAL_LM'.", "✗",
      second.task_type_names, source="CLAIMS-2.md"),
    C(25, "003", "Its recommended LoraConfig(...) snippet, commented inline.", "✗", second.seed_003_config_syntax,
      source="CLAIMS-2.md"),
    C(26, "002", "lora_dropout randomly drops 10% of LoRA's connections.", "✗",
      second_measured.dropout_is_not_dropconnect, source="CLAIMS-2.md"),
    C(27, "004", "A low intrinsic dimension means the data fits in a lower-dimensional space.", "✗",
      second_measured.dimension_of_parameters_not_data, source="CLAIMS-2.md"),
    C(28, "000", "LoRA (about 0.12%) is more parameter-efficient than adapters (about 1%).", "~",
      second_measured.lora_against_adapters, source="CLAIMS-2.md"),
    C(29, "000", "About 12,288 parameters per attention matrix, about 0.12% of the total.", "✗",
      second.share_of_one_pair, source="CLAIMS-2.md"),
    C(30, "000, 003", "task_type makes LoRA update the attention layers correctly / picks the architecture.", "✗",
      second.target_modules_decide, source="CLAIMS-2.md"),
    C(31, "000", "Unscaled, the low-rank update is too small; dividing by r normalizes it.", "~",
      second_measured.dividing_by_r_shrinks, source="CLAIMS-2.md"),
    C(32, "002", "NF4 stands for 'normalization float 4'.", "✗", second_measured.nf4_is_normal_float,
      source="CLAIMS-2.md"),
    C(33, "002", "trainer.train() is the step that applies PEFT to the model.", "✗", second.where_peft_is_applied,
      source="CLAIMS-2.md"),
)
SOURCES = tuple(dict.fromkeys(c.source for c in CLAIMS))   # the claim files, in table order


def check_table(claims: tuple[Claim, ...]) -> dict[int, Claim]:
    """The table by row number; a ValueError naming the entry for a repeated row, a verdict or an input
    that is not allowed."""
    by_row: dict[int, Claim] = {}
    for c in claims:
        if c.row in by_row:
            raise ValueError(f"row={c.row} appears twice in the claims table ({by_row[c.row].source}, {c.source}): "
                             "row numbers must be unique")
        if c.verdict not in VERDICTS:
            raise ValueError(f"verdict={c.verdict!r} of row {c.row} is not allowed: use one of {', '.join(VERDICTS)}")
        if bad := [i for i in c.inputs if i not in INPUTS]:
            raise ValueError(f"inputs={bad!r} of row {c.row} are not allowed: use some of {', '.join(INPUTS)}")
        by_row[c.row] = c
    return by_row


BY_ROW = check_table(CLAIMS)
