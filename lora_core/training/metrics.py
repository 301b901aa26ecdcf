"""What a fine-tune learned and what it forgot: completion loss, greedy generation, BLEU, perplexity.

    completion_loss(model, tok, pairs)      mean cross-entropy on completion tokens only (held-out loss)
    generate(model, tok, prompts)           greedy, deterministic, batched with left padding
    bleu(predictions, references)           corpus BLEU by sacrebleu (Post 2018, arXiv 1804.08771), 0–100
    perplexity(model, tok, text)            exp(mean next-token NLL) on plain text: the "forget" side

BLEU (Papineni et al. 2002) is reported on sacrebleu's 0–100 scale. Some texts quote it on 0–1:
0.65 there is 65 here. It is never hand-written: sacrebleu's defaults (13a tokenizer, exp smoothing)
make the number comparable with anyone else's sacrebleu score.

The text format is data.py's: the prompt, then the model continues; a prediction is everything it
generates up to its EOS (or max_new_tokens), whitespace-trimmed.
"""

from __future__ import annotations

import math

import sacrebleu
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationConfig, PreTrainedTokenizerBase

from ..device import autocast
from .data import IGNORE_INDEX, Pair, collate, encode_pair, encode_prompt, left_pad


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over the positions whose label is not -100."""
    # position t predicts token t+1: (B, T-1, V) against (B, T-1); upcast in case of bf16 autocast
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class _EvalMode:
    """Eval mode (no dropout) for the block; the model's previous mode comes back afterwards."""

    def __init__(self, model: nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc) -> None:
        self.model.train(self.was_training)


@torch.no_grad()
def completion_loss(model: nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair],
                    seq_len: int = 64, batch_size: int = 16) -> tuple[float, int]:
    """(mean NLL per completion token, number of completion tokens) over `pairs`, in nats."""
    if not pairs:
        raise ValueError("pairs=[] is not allowed: give at least one (prompt, completion) pair")
    device, nll, count = _device(model), 0.0, 0
    with _EvalMode(model):
        for i in range(0, len(pairs), batch_size):
            batch = collate([encode_pair(tokenizer, p, c, seq_len) for p, c in pairs[i:i + batch_size]],
                            tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               use_cache=False).logits  # (B, T, V)
            nll += token_nll(logits, batch["labels"]).item()
            count += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    if count == 0:
        raise ValueError(f"seq_len={seq_len} leaves no completion token to score: raise seq_len")
    return nll / count, count


@torch.no_grad()
def generate(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
             max_new_tokens: int = 24, batch_size: int = 16) -> list[str]:
    """Greedy completions, one string per prompt (deterministic; batching does not change them)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} is not allowed: use an integer >= 1")
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, not one string")
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    if any(not ids for ids in encoded):
        raise ValueError("prompts contains an empty prompt: every prompt needs at least one token")
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if limit is not None and (longest := max(map(len, encoded), default=0)) + max_new_tokens > limit:
        # Past its last position embedding the model fails deep inside generate(): say so here instead.
        raise ValueError(f"prompt has {longest:,} tokens: this model reads at most {limit:,} positions, so with "
                         f"max_new_tokens={max_new_tokens} a prompt may have at most {limit - max_new_tokens:,} "
                         "tokens; shorten it")
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                               pad_token_id=pad, eos_token_id=eos)
    device, out = _device(model), []
    with _EvalMode(model):
        for i in range(0, len(encoded), batch_size):
            input_ids, mask = left_pad(encoded[i:i + batch_size], pad)
            with autocast(device):
                ids = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                     generation_config=gen_cfg)  # (B, T + new)
            for row in ids[:, input_ids.shape[1]:].tolist():
                if eos in row:
                    row = row[:row.index(eos)]  # everything after the first EOS is padding
                out.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return out


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU of `predictions` against one reference each, on sacrebleu's 0–100 scale."""
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"predictions ({len(predictions)}) and references ({len(references)}) "
                         "must be non-empty lists of the same length")
    return sacrebleu.corpus_bleu(predictions, [references]).score


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer: PreTrainedTokenizerBase, text: str, block_size: int = 256) -> float:
    """exp(mean next-token NLL) of `text`, read in non-overlapping blocks of `block_size` tokens.

    Blocks are cut to the model's context length; the first token of each block is not scored.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < 2:
        raise ValueError(f"text has {len(ids)} token(s): perplexity needs at least 2")
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    block_size = min(block_size, limit) if limit else block_size
    device, nll, count = _device(model), 0.0, 0
    with _EvalMode(model):
        for start in range(0, len(ids), block_size):
            block = torch.tensor([ids[start:start + block_size]], device=device)  # (1, T)
            if block.shape[1] < 2:
                continue
            with autocast(device):
                logits = model(input_ids=block, use_cache=False).logits  # (1, T, V)
            nll += token_nll(logits, block).item()
            count += block.shape[1] - 1
    return math.exp(nll / count)
