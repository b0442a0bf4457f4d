"""Reductions across the processes of a distributed run; each is the identity in a single process.

accelerate's `reduce` does the work; what it lacks is a forward that sees the global batch where it mixes samples
(torch's SyncBatchNorm needs a GPU). The gather with gradient the contrastive losses use belongs to the objective
(`loss_sppscl.SppSclLoss`); the paper's batch attention borrows it here.
"""

import functools
from contextlib import contextmanager

import torch
from torch import nn
from accelerate.state import PartialState
from accelerate.utils import reduce

from ..loss_sppscl import gather_with_grad


def world_size() -> int:
    return PartialState().num_processes


def sum_values(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Floats summed element-wise over every process."""
    if world_size() == 1:
        return list(values)
    return reduce(torch.tensor(values, dtype=torch.float64, device=device), reduction="sum").tolist()


def average_in_place(tensors) -> None:
    """Replace each tensor by its mean over every process."""
    if world_size() == 1:
        return
    for tensor in tensors:
        tensor.copy_(reduce(tensor, reduction="mean"))


class _SumOverProcesses(torch.autograd.Function):
    """all_reduce (sum) whose backward sums the gradients too: each process's loss depends on every part."""

    @staticmethod
    def forward(ctx, tensor):
        total = tensor.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad):
        return _SumOverProcesses.apply(grad)


def _normalise_over_global_batch(norm: nn.modules.batchnorm._BatchNorm, input: torch.Tensor) -> torch.Tensor:
    """`norm`'s training forward with the mean and (biased) variance of the batch gathered from every process,
    and its running statistics updated with them, as one process holding the whole batch would."""
    if not norm.training:
        return type(norm).forward(norm, input)
    # Per channel: dim 1 is the channel, every other dim is a sample of it.
    dims = [0, *range(2, input.dim())]
    shape = [1, -1] + [1] * (input.dim() - 2)
    count = reduce(input.new_tensor(input.numel() // input.shape[1]), reduction="sum")
    mean = _SumOverProcesses.apply(input.sum(dims)) / count
    centred = input - mean.view(shape)
    variance = _SumOverProcesses.apply((centred * centred).sum(dims)) / count
    output = centred * torch.rsqrt(variance.view(shape) + norm.eps)
    if norm.affine:
        output = output * norm.weight.view(shape) + norm.bias.view(shape)
    if norm.track_running_stats:
        with torch.no_grad():
            norm.num_batches_tracked += 1
            momentum = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
            norm.running_mean.lerp_(mean, momentum)
            norm.running_var.lerp_(variance * count / (count - 1), momentum)
    return output


@contextmanager
def forward_over_global_batch(model: nn.Module):
    """Within, wherever `model`'s forward mixes the samples of a batch it sees the batch gathered from every
    process: every BatchNorm layer in training mode normalises with the global batch's statistics, and modules
    with a `gather_batch` hook (the paper's batch attention) attend over the global batch. The identity in a
    single process.

    Every process must run the same forwards inside (each of those is a collective).
    """
    if world_size() == 1:
        yield
        return
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    gathering = [m for m in model.modules() if hasattr(m, "gather_batch")]
    for norm in norms:
        norm.forward = functools.partial(_normalise_over_global_batch, norm)
    for module in gathering:
        module.gather_batch = gather_with_grad
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward
        for module in gathering:
            module.gather_batch = None


__all__ = ["average_in_place", "forward_over_global_batch", "sum_values", "world_size"]
