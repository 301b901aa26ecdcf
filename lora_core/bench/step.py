"""One training step, three ways: eager, and on CUDA captured once as a graph and replayed.

    loss = train_step(model, optimizer, ids)             # forward, LM loss, backward, AdamW
    step = cuda_graph_step(model, capturable_adamw, ids)  # CUDA: one launch per step afterwards
    loss = step()

`lora_core.bench` times these; a graph pays where a step is hundreds of small kernel launches
(small batches on a fast GPU). On CPU only `train_step` applies.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn as nn


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer | None, ids: torch.Tensor) -> torch.Tensor:
    """One step: forward, the LM loss, backward, and (for trainable variants) AdamW, grads set to None."""
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return loss


def graph_twin(model: nn.Module) -> nn.Module:
    """A copy of `model` for a captured step: frozen parameters shared, trainable ones (and buffers) its own."""
    memo = {id(p): p for p in model.parameters() if not p.requires_grad}
    return copy.deepcopy(model, memo)


def cuda_graph_step(model: nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor,
                    warmup: int = 3) -> Callable[[], torch.Tensor]:
    """The whole training step (forward, backward, AdamW) captured once as a CUDA graph, replayed per call.

    PyTorch's whole-network capture recipe (torch.cuda.graphs docs): warm up on a side stream, set the
    gradients to None so that the captured backward allocates them from the graph's private pool (each
    replay then overwrites them: no zeroing needed), and use an optimizer built with `capturable=True`.
    `ids` is a static input: copy a new batch into it before a replay. Dropout masks are drawn inside the
    graph from CUDA's graph-safe generator. One launch replaces hundreds of small kernel launches, which
    is where it pays: small batches on a fast GPU. Returns a callable that replays and gives the loss.

    Give the graph a model of its own (`graph_twin`): the captured backward's AccumulateGrad nodes belong to the
    side stream, and an eager step on the same parameters afterwards met them there. On an H200 (torch 2.11) that
    ended in an illegal memory access in the eager backward, after torch's warning of a stream mismatch.
    """
    if ids.device.type != "cuda":
        raise ValueError(f"cuda_graph_step needs CUDA tensors; ids are on {ids.device}")
    if not all(g.get("capturable", False) for g in optimizer.param_groups):
        raise ValueError("cuda_graph_step needs an optimizer built with capturable=True")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            optimizer.zero_grad(set_to_none=True)
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = model(input_ids=ids, labels=ids).loss
        static_loss.backward()
        optimizer.step()
    static_loss = static_loss.detach()  # the same memory, refilled by each replay; the autograd graph is let go

    def replay() -> torch.Tensor:
        graph.replay()
        return static_loss

    return replay


def frozen_graph_step(model: nn.Module, ids: torch.Tensor, warmup: int = 3) -> Callable[[], torch.Tensor]:
    """The floor (forward + backward through the activations, nothing to update) as a CUDA graph."""
    if ids.device.type != "cuda":
        raise ValueError(f"frozen_graph_step needs CUDA tensors; ids are on {ids.device}")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            model(input_ids=ids, labels=ids).loss.backward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = model(input_ids=ids, labels=ids).loss
        static_loss.backward()
    static_loss = static_loss.detach()

    def replay() -> torch.Tensor:
        graph.replay()
        return static_loss

    return replay
