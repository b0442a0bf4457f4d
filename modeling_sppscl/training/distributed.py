"""Reductions across the processes of a distributed run; each is the identity in a single process.

accelerate's `gather` and `reduce` do the work; the one thing they lack is a gather that keeps the gradient path
to each process's own part, which the contrastive losses over the global batch need.
"""

import torch
from accelerate.state import PartialState
from accelerate.utils import gather, reduce


def world_size() -> int:
    return PartialState().num_processes


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process along dim 0; gradients flow back to this process's part."""
    if world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0)


def gather_labels(labels: torch.Tensor) -> torch.Tensor:
    """Every process's labels, in the order of `gather_with_grad`."""
    return gather(labels)


def sum_counts(*counts: int, device: torch.device | str = "cpu") -> tuple[int, ...]:
    """Integer counts summed over every process (so that every rank takes the same decision)."""
    if world_size() == 1:
        return counts
    return tuple(int(value) for value in reduce(torch.tensor(counts, dtype=torch.int64, device=device), reduction="sum"))


def average_in_place(tensors) -> None:
    """Replace each tensor by its mean over every process."""
    if world_size() == 1:
        return
    for tensor in tensors:
        tensor.copy_(reduce(tensor, reduction="mean"))


__all__ = ["average_in_place", "gather_labels", "gather_with_grad", "sum_counts", "world_size"]
