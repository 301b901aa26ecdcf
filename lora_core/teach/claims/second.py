"""Rows 24, 25, 29, 30 and 33 of CLAIMS-2.md: task_type's names and what it does, seed 003's snippet, a
percentage, and where a trainer applies PEFT, each checked by running the library or the parser now.

Each function returns (the truth in words, with numbers filled in, and its Evidence); table.py says
which claim each one answers.
"""

from __future__ import annotations

import ast
import functools
import warnings

import torch

from ...config import TASK_TYPES, LoraConfig
from ...counting import count_lora_parameters
from ...inject import inject_lora, lora_layers, trainable_parameters
from ...models.sources import build_on_meta
from ..evidence import Evidence, config_call, percent
from ..seeded import generator, random_ids, tiny_gpt2
from . import sources
from .quoted import SEED_000, SEED_003_ARGS, SEED_003_COMMENTED, TRL_PEFT_CALL

SEED_000_TASK_TYPES = ("TOKEN_CLASSIFICATION", "SEQ_2_SEQ_LM", "CAUSAL_LM")  # the options seed 000 lists


def _refusal(build) -> str | None:
    """None if `build()` accepts, else the error it raises, as 'Type: message'."""
    try:
        build()
    except (ValueError, TypeError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def task_type_names() -> tuple[str, Evidence]:
    """Row 24. Seed 000's task_type names handed to peft.LoraConfig and lora_core's LoraConfig, and PEFT's real
    names read from peft.TaskType."""
    peft = sources.installed("peft")
    real = [t.value for t in peft.TaskType] if peft is not None else list(TASK_TYPES)
    rows = []
    for name in SEED_000_TASK_TYPES:
        row = {"task_type": name, "lora_core": _refusal(lambda n=name: LoraConfig(task_type=n)) or "accepted"}
        if peft is not None:
            row["PEFT"] = _refusal(lambda n=name: peft.LoraConfig(task_type=n)) or "accepted"
        rows.append(row)
    bad = rows[0]
    truth = (f"PEFT's names, read from peft.TaskType{'' if peft else ' (PEFT absent: lora_core’s copy)'}: "
             f"{', '.join(real)}. `{SEED_000_TASK_TYPES[0]}` is not one of them: "
             + (f"peft.LoraConfig raises {bad['PEFT']!r}; " if peft is not None else "")
             + f"lora_core's LoraConfig raises {bad['lora_core']!r}. The token-classification name is TOKEN_CLS; the "
             f"seed's other two, {' and '.join(SEED_000_TASK_TYPES[1:])}, are accepted.")
    return truth, Evidence(
        metrics={"PEFT's task types": str(len(real)),
                 f"{SEED_000_TASK_TYPES[0]} in them": str(bad["task_type"] in real),
                 "token classification is": next(t for t in real if t.startswith("TOKEN"))},
        table=rows, code="\n".join(f"TaskType.{t}" for t in real),
        note="peft.TaskType and LoraConfig(task_type=...) in PEFT and lora_core, called now")


def seed_003_snippet(args: dict = SEED_003_ARGS, commented: tuple[str, ...] = SEED_003_COMMENTED) -> dict:
    """Seed 003's LoraConfig call rebuilt from its arguments, with `//` after the commented ones, and the same
    call with Python's `#`: what ast.parse says of each, and the keywords of the one that parses."""
    def source(marker: str) -> str:
        lines = config_call(args).replace("config = ", "lora_config = ").splitlines()
        return "\n".join(f"{line}  {marker} a comment in the seed" if line.strip().split("=")[0] in commented
                         else line for line in lines) + "\n"
    broken, fixed = source("//"), source("#")
    try:
        ast.parse(broken)
        error = None
    except SyntaxError as err:
        error = {"message": err.msg, "line": err.lineno, "text": (err.text or "").rstrip()}
    call = ast.parse(fixed).body[0].value
    keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    return {"broken": broken, "error": error, "fixed": fixed, "keywords": keywords,
            "config_ok": _refusal(lambda: LoraConfig(**keywords)) is None}


def seed_003_config_syntax() -> tuple[str, Evidence]:
    """Row 25. Seed 003's snippet handed to ast.parse: `//` is floor division in Python, not a comment."""
    s = seed_003_snippet()
    err = s["error"]
    truth = (f"ast.parse rejects it: SyntaxError '{err['message']}' at line {err['line']} ({err['text'].strip()}). "
             f"In Python `//` is floor division; comments start with `#`. With `#` the call parses, with keywords "
             f"{', '.join(s['keywords'])}, and lora_core's LoraConfig "
             f"{'accepts' if s['config_ok'] else 'refuses'} them. Row 13 is the same kind of error in seed 001.")
    return truth, Evidence(metrics={"ast.parse": "SyntaxError" if err else "parses", "line": str(err["line"]),
                                    "with # instead": "parses", "keywords": str(len(s["keywords"]))},
                           code=s["broken"], note="claims.second.seed_003_snippet: the call rebuilt from the seed's "
                                                  "arguments (quoted.SEED_003_ARGS), then ast.parse")


def share_of_one_pair() -> tuple[str, Evidence]:
    """Row 29. One 768×768 pair (12,288) over PEFT's all params for seed 000's setup, and the seed's 0.12%."""
    pair = count_lora_parameters("distilgpt2", LoraConfig(r=SEED_000["r"], target_modules=r".*\.attn\.c_proj")).rows[0]
    book = count_lora_parameters("distilgpt2", LoraConfig(r=SEED_000["r"], target_modules=SEED_000["targets"]))
    share, claimed = pair.lora_per_module / book.total, SEED_000["claimed"] / book.total
    truth = (f"One rank-{pair.r} pair on a {pair.in_features}×{pair.out_features} matrix is {pair.lora_per_module:,}; "
             f"over all {book.total:,} parameters (PEFT's count for the seed's setup) that is {percent(share, 4)}, "
             f"not {SEED_000['claimed_percent']}%. {SEED_000['claimed_percent']}% is near the seed's figure for the "
             f"whole adapter: {SEED_000['claimed']:,} / {book.total:,} = {percent(claimed, 4)}. Over the frozen "
             f"model alone ({book.base_total:,}) the pair is {percent(pair.lora_per_module / book.base_total, 4)}.")
    return truth, Evidence(metrics={"pair": f"{pair.lora_per_module:,}", "all params": f"{book.total:,}",
                                    "pair / all": percent(share, 4), "seed's 98,304 / all": percent(claimed, 4)},
                           table=[{"count": label, "parameters": n, "share of all params": percent(n / book.total, 4)}
                                  for label, n in ((f"one rank-{pair.r} pair on attn.c_proj", pair.lora_per_module),
                                                   ("the seed's claimed adapter", SEED_000["claimed"]),
                                                   ("the real adapter (c_attn in every block)", book.lora_params))],
                           note="lora_core.count_lora_parameters (attn.c_proj at r=8; c_attn at r=8 for the total)")


@functools.lru_cache(maxsize=1)
def wrapped_by_task_type(targets: tuple[str, ...] = ("c_attn",), r: int = 8) -> dict:
    """{task_type: the module names LoRA wraps} in lora_core and in PEFT, both on distilgpt2 on the meta device."""
    ours = {repr(t): sorted(count_lora_parameters("distilgpt2", LoraConfig(r=r, target_modules=list(targets),
                                                                            task_type=t)).wrapped)
            for t in (None, *TASK_TYPES)}
    peft, theirs = sources.installed("peft"), {}
    for t in ((None, *TASK_TYPES) if peft is not None else ()):
        try:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")  # Conv1D fan_in_fan_out notice
                model = peft.get_peft_model(build_on_meta("distilgpt2"),
                                            peft.LoraConfig(r=r, target_modules=list(targets), task_type=t))
            theirs[repr(t)] = sorted(n.removeprefix("base_model.model.") for n, m in model.named_modules()
                                     if hasattr(m, "lora_A") and hasattr(m, "base_layer"))
        except Exception as err:  # a wrapper that cannot be built on GPT-2: report it, as PEFT says it
            theirs[repr(t)] = f"{type(err).__name__}"
    return {"lora_core": ours, "peft": theirs}


def target_modules_decide() -> tuple[str, Evidence]:
    """Row 30. The modules LoRA wraps for every task_type, with target_modules fixed: one list, in both libraries."""
    w = wrapped_by_task_type()
    ours, theirs = w["lora_core"], w["peft"]
    distinct = {tuple(v) for v in ours.values()}
    built = {k: v for k, v in theirs.items() if isinstance(v, list)}
    same_ours = "the same" if len(distinct) == 1 else "different"
    truth = (f"With target_modules=['c_attn'] fixed, lora_core wraps {same_ours} modules for all {len(ours)} "
             f"task_type values (None and PEFT's {len(ours) - 1}): "
             f"{len(next(iter(distinct)))} c_attn layers of distilgpt2, no other attention layer.")
    if theirs:
        same = len({tuple(v) for v in built.values()}) == 1
        truth += (f" PEFT, on the same model: the {len(built)} wrappers it builds wrap "
                  f"{'the same' if same else 'different'} {len(next(iter(built.values())))} modules"
                  + (f"; {', '.join(k for k in theirs if k not in built)} cannot be built on GPT-2 at all."
                     if len(built) < len(theirs) else "."))
    truth += (" task_type picks the wrapper class (and for classification saves the head, row 4); target_modules "
              "alone says where LoRA goes.")
    built_by = lambda k: theirs[k] if isinstance(theirs.get(k), list) else None   # PEFT's list, if it built one
    table = [{"task_type": k, "lora_core wraps": len(v),
              "PEFT wraps": len(built_by(k)) if built_by(k) is not None else None,
              "PEFT error": theirs.get(k, "PEFT absent") if built_by(k) is None else "",
              "same modules in both": v == built_by(k) if built_by(k) is not None else None}
             for k, v in ours.items()]
    return truth, Evidence(metrics={"task_types tried": str(len(ours)), "distinct wrapped sets (lora_core)":
                                    str(len(distinct)), "modules wrapped": str(len(next(iter(distinct))))},
                           table=table, code="\n".join(next(iter(distinct))),
                           note="lora_core.count_lora_parameters(...).wrapped per task_type; peft.get_peft_model on "
                                "meta")


@functools.lru_cache(maxsize=1)
def wrap_then_train(r: int = 4, seed: int = 0) -> list[dict]:
    """Trainable parameters and LoRA layers of a tiny GPT-2 before wrapping, right after inject_lora (before any
    step), and after one optimizer step: the wrap changes the model, the step changes only values."""
    model = tiny_gpt2(seed)
    rows = [{"stage": "loaded", "trainable": trainable_parameters(model)[0], "LoRA layers": len(lora_layers(model)),
             "‖B‖ summed": 0.0}]
    inject_lora(model, LoraConfig(r=r, target_modules=["c_attn"]), generator=generator(seed + 1))
    norm = lambda: sum(layer.adapter().B.norm().item() for _, layer in lora_layers(model))
    rows.append({"stage": "after inject_lora (≈ get_peft_model)", "trainable": trainable_parameters(model)[0],
                 "LoRA layers": len(lora_layers(model)), "‖B‖ summed": norm()})
    # Left in eval mode: GPT-2's dropout would draw from the global RNG, and gradients flow either way.
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = random_ids(model.config.vocab_size, (2, 16), seed)
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    rows.append({"stage": "after one training step", "trainable": trainable_parameters(model)[0],
                 "LoRA layers": len(lora_layers(model)), "‖B‖ summed": norm()})
    return rows


def where_peft_is_applied() -> tuple[str, Evidence]:
    """Row 33. Where the PEFT config is applied: in SFTTrainer.__init__ (read live if TRL is installed, else cited),
    and, measured, the wrap changing the model before any training step."""
    rows = wrap_then_train()
    loaded, wrapped, trained = rows
    cls = sources.installed_sfttrainer()
    sites = sources.peft_call_sites(cls) if cls is not None else {}
    if sites:
        found = ", ".join(f"{k}: {len(v)} call(s)" for k, v in sites.items())
        truth = f"Read from the TRL installed here (inspect.getsource): get_peft_model appears in {found}. "
    else:
        truth = (f"TRL is not installed here, so its source is cited: {TRL_PEFT_CALL['revision']}, "
                 f"{TRL_PEFT_CALL['file']}, {TRL_PEFT_CALL['function']} runs `{TRL_PEFT_CALL['call']}` when "
                 f"peft_config is given; train() is {TRL_PEFT_CALL['train']} and only trains. ")
    truth += (f"Measured on a tiny GPT-2: {loaded['trainable']:,} trainable parameters as loaded, "
              f"{wrapped['trainable']:,} and {wrapped['LoRA layers']} LoRA layers right after wrapping, before any "
              f"step; one training step leaves {trained['trainable']:,} and {trained['LoRA layers']} and only moves "
              f"the values (‖B‖ {wrapped['‖B‖ summed']:g} → {trained['‖B‖ summed']:.3g}).")
    code = ("\n".join(f"# {k}\n" + "\n".join(v) for k, v in sites.items()) if sites else
            f"# {TRL_PEFT_CALL['file']}, {TRL_PEFT_CALL['function']} (cited)\n{TRL_PEFT_CALL['call']}")
    return truth, Evidence(metrics={"trainable as loaded": f"{loaded['trainable']:,}",
                                    "after wrapping": f"{wrapped['trainable']:,}",
                                    "after a training step": f"{trained['trainable']:,}",
                                    "TRL source": "read live" if sites else "cited"},
                           table=rows, code=code,
                           note="claims.second.wrap_then_train (lora_core.inject_lora, one AdamW step); "
                                "claims.sources.peft_call_sites when TRL is installed")
