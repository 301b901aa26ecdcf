"""The claims check as data: one `Claim` per row of CLAIMS.md, each with the function that measures its truth.

A teacher reads a claim, its verdict and where its evidence comes from on one entry. To add a claim,
write a function that returns (the truth in words, Evidence) in counts.py, measured.py or libraries.py
(or a new module beside them), and add one entry to CLAIMS. Rows of a second file, such as
CLAIMS-2.md (rows 24–33), go in the same table with `source="CLAIMS-2.md"`.

Verdicts: ✓ right, ~ partly right, ✗ wrong, ? unverified (measure it). The verdicts are the
project's; every number behind them is computed by lora_core when asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..evidence import Evidence
from . import counts, libraries, measured

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
)


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
