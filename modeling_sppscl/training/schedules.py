"""The paper's learning-rate schedule as one more `--lr_scheduler_type` choice: `halving`, the learning rate halved
every `--lr_halving_epochs` epochs (10 in the paper), after transformers' linear warm-up when `--warmup_steps` is
set (the halving counts epochs from the start of training, warm-up included)."""

import math
from enum import Enum
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from transformers import SchedulerType


class SppSclSchedulerType(str, Enum):
    """The `lr_scheduler_type` values `SppSclTrainingArguments` takes besides transformers' `SchedulerType`."""

    HALVING = "halving"


LR_SCHEDULER_TYPES = tuple(kind.value for kind in (*SchedulerType, *SppSclSchedulerType))
DEFAULT_HALVING_EPOCHS = 10


def halving_factor(step: int, period_steps: float, num_warmup_steps: int) -> float:
    # The warm-up ramp is transformers' `constant_with_warmup` one.
    warmup = step / max(1, num_warmup_steps) if step < num_warmup_steps else 1.0
    return warmup * 0.5 ** math.floor(step / period_steps)


def get_halving_schedule(optimizer: Optimizer, period_steps: float, num_warmup_steps: int = 0) -> LambdaLR:
    """A `LambdaLR` (its state, the step count, is what a checkpoint's scheduler.pt holds and resuming restores)."""
    return LambdaLR(optimizer, partial(halving_factor, period_steps=period_steps, num_warmup_steps=num_warmup_steps))


__all__ = ["DEFAULT_HALVING_EPOCHS", "LR_SCHEDULER_TYPES", "SppSclSchedulerType", "get_halving_schedule", "halving_factor"]
