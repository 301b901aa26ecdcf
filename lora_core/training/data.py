"""Datasets for live fine-tuning: prompt/completion pairs, tokenized so that only the completion is learned.

    ds = load_dataset("recommendations")          # ds.train, ds.test: lists of (prompt, completion)
    pairs = load_jsonl(uploaded_bytes)            # a user's file, validated row by row
    batch = collate([encode_pair(tok, p, c, 64) for p, c in ds.train[:8]], tok.pad_token_id)

The text format is plain and the same for training and generation: the prompt, one space, the
completion, then the tokenizer's EOS, which is how the model learns to stop. No chat template.

    tokens   User  likes  cooking  videos  .  | I  recommend  'Pasta  Tutorial'  <eos>  <pad> <pad>
    labels   -100  -100   -100     -100   -100| I  recommend  'Pasta  Tutorial'  <eos>  -100  -100

Labels are -100 (cross_entropy's ignore_index) on the prompt and on padding, so the loss is the
completion's alone (instruction-tuning practice, e.g. Alpaca and TRL's completion-only collator).
Padding is masked by position, not by token id: GPT-2 pads with its EOS id, and the real EOS that
ends a completion must still be learned.

The shipped datasets live in datasets/ and are built by datasets/make_datasets.py.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

DATA_DIR = Path(__file__).parent / "datasets"
DATASETS = ("recommendations",)
GENERAL_ENGLISH = DATA_DIR / "general_english.txt"
IGNORE_INDEX = -100          # positions cross_entropy skips: prompt and padding
MAX_ROWS = 5000              # an uploaded file may hold at most this many pairs
MAX_FIELD_CHARS = 2000       # and each prompt or completion at most this many characters
SPLITS = ("train", "test")
FIELDS = ("prompt", "completion")  # each line of a JSONL file: {"prompt": ..., "completion": ...}
EXAMPLE_LINE = '{"prompt": "User likes chess videos.", "completion": "I recommend \'Endgame Basics\'"}'

Pair = tuple[str, str]       # (prompt, completion)


@dataclass(frozen=True)
class Dataset:
    """A named set of (prompt, completion) pairs in two splits; `test` may be empty."""

    name: str
    train: list[Pair]
    test: list[Pair]

    def split(self, which: str) -> list[Pair]:
        """The pairs of split `which` ("train" or "test")."""
        if which not in SPLITS:
            raise ValueError(f"split={which!r} is not allowed: use one of {', '.join(map(repr, SPLITS))}")
        return self.train if which == "train" else self.test

    @classmethod
    def from_pairs(cls, pairs: list[Pair], name: str = "upload", test_fraction: float = 0.1,
                   seed: int = 0) -> Dataset:
        """Split `pairs` at random (seeded) into train and test; test_fraction=0 keeps them all for training."""
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction={test_fraction!r} is not allowed: use a number in [0, 1)")
        if not pairs:
            raise ValueError("pairs=[] is not allowed: a dataset needs at least one (prompt, completion) pair")
        order = list(range(len(pairs)))
        random.Random(seed).shuffle(order)
        n_test = round(test_fraction * len(pairs))
        n_test = min(n_test, len(pairs) - 1)  # keep at least one pair to train on
        test = [pairs[i] for i in sorted(order[:n_test])]
        train = [pairs[i] for i in sorted(order[n_test:])]
        return cls(name, train, test)


# --- reading files -----------------------------------------------------------------------------
def _read_bytes(source: str | os.PathLike | bytes) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "uploaded file"
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"path={str(source)!r} is not a file")
    return path.read_bytes(), repr(str(path))


def load_jsonl(source: str | os.PathLike | bytes, max_rows: int = MAX_ROWS) -> list[Pair]:
    """(prompt, completion) pairs from JSON Lines: a path or the raw bytes of an upload.

    Each non-blank line must be an object with non-empty string fields "prompt" and "completion"
    (other fields are ignored). Raises ValueError naming the line for anything else: an empty
    file, bytes that are not UTF-8, bad JSON, a missing field, or more than `max_rows` rows.
    """
    raw, what = _read_bytes(source)
    try:
        text = raw.decode("utf-8-sig")  # tolerate the BOM some editors write
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} is not UTF-8 text (bad byte at offset {e.start}): "
                         "save it as UTF-8 JSON Lines") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise ValueError(f"{what} is empty: it needs one JSON object per line, e.g. {EXAMPLE_LINE}")
    if len(lines) > max_rows:
        raise ValueError(f"{what} has {len(lines)} rows: at most max_rows={max_rows} are allowed")
    pairs = []
    for n, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what} line {n} is not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{what} line {n} is a {type(row).__name__}: each line must be a JSON object")
        for field in FIELDS:
            _check_field(row, field, f"{what} line {n}")
        pairs.append((row["prompt"].strip(), row["completion"].strip()))
    return pairs


def _check_field(row: dict, field: str, where: str) -> None:
    """One field of one row: present, a non-empty string, not too long, and text a tokenizer can encode."""
    if field not in row:
        keys = ", ".join(_short(k, 40) for k in list(row)[:10]) + (", ..." if len(row) > 10 else "")
        raise ValueError(f"{where}: field {field!r} is missing (the line has keys [{keys}]); each line needs "
                         f"{' and '.join(map(repr, FIELDS))}, e.g. {EXAMPLE_LINE}")
    value = row[field]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {field!r} is {_short(value, 80)}; it must be a non-empty string")
    if len(value) > MAX_FIELD_CHARS:
        raise ValueError(f"{where}: field {field!r} has {len(value)} characters; "
                         f"at most {MAX_FIELD_CHARS} are allowed")
    # JSON's \ud800-style escapes may name half of a surrogate pair, which json.loads keeps as a lone
    # surrogate: no Unicode character, so UTF-8 (and every tokenizer) refuses it. A whole pair was
    # already joined into one character by json.loads, so what is left here is always an error.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{where}: field {field!r} holds a lone surrogate {value[e.start]!r} at character "
                         f"{e.start + 1}, which is not a Unicode character: write the character itself, or both "
                         "halves of its surrogate pair (e.g. \\ud83d\\ude00)") from None


def _short(value: object, limit: int) -> str:
    """repr(value), cut to `limit` characters: a message never echoes a whole upload back."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_dataset(name: str) -> Dataset:
    """A shipped dataset by name ("recommendations"), or any .jsonl file split 90/10 (seed 0)."""
    if name in DATASETS:
        train = load_jsonl(DATA_DIR / f"{name}.train.jsonl")
        test = load_jsonl(DATA_DIR / f"{name}.test.jsonl")
        return Dataset(name, train, test)
    path = Path(name)
    if path.suffix == ".jsonl" and path.is_file():
        return Dataset.from_pairs(load_jsonl(path), name=path.stem)
    raise ValueError(f"dataset={name!r} is not allowed: use one of {', '.join(map(repr, DATASETS))} "
                     "or the path of a .jsonl file with prompt/completion fields")


def general_english() -> str:
    """A few paragraphs of plain English (ours, written for LoRA Lab): the "forget" side of learn vs forget."""
    return GENERAL_ENGLISH.read_text(encoding="utf-8")


# --- tokenizing --------------------------------------------------------------------------------
def _eos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has eos_token_id=None: completions must end with an EOS token")
    return tokenizer.eos_token_id


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of the prompt, exactly as they start a training example (no special tokens)."""
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str,
                seq_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for "prompt completion<eos>", cut to seq_len tokens.

    Prompt and completion are tokenized apart, so the label mask falls exactly on the boundary.
    """
    p = encode_prompt(tokenizer, prompt)
    c = tokenizer(" " + completion, add_special_tokens=False)["input_ids"] + [_eos_id(tokenizer)]
    ids = (p + c)[:seq_len]
    labels = ([IGNORE_INDEX] * len(p) + c)[:seq_len]
    return ids, labels


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad encoded examples to the longest: input_ids, attention_mask, labels, each (B, T)."""
    if not examples:
        raise ValueError("examples=[] is not allowed: a batch needs at least one example")
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(examples):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, :len(lab)] = torch.tensor(lab)
        mask[i, :len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts for batched generation, so every row's next token is at the same column.

    Returns (input_ids, attention_mask), each (B, T).
    """
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        if s:
            input_ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
    return input_ids, mask
