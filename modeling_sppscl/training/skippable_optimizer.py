"""`SkippableOptimizer`: an optimizer that can be told to skip its next `step()`.

The two-step update takes its first optimizer step inside `SppSclTrainer.training_step`; the Trainer's own
optimizer step, which follows every update, then applies step 2, or, when there is no step 2 (gate closed,
`inter_loss_weight` 0), must move nothing. Gradients of None would do that for a plain optimizer, but a float16
`GradScaler` refuses to unscale or step an optimizer without gradients: so the parameters get zero gradients,
which the scaler unscales and checks, and this wrapper skips the step itself (AdamW would otherwise still move
every parameter with its momentum and weight decay).
"""

import torch


def _delegated(name: str) -> property:
    """An attribute read from and written to the wrapped optimizer."""
    return property(lambda self: getattr(self.optimizer, name), lambda self, value: setattr(self.optimizer, name, value))


class SkippableOptimizer(torch.optim.Optimizer):
    """Delegates to `optimizer`, as accelerate's `AcceleratedOptimizer` does (its state, param groups and defaults
    are the wrapped optimizer's, so checkpoints hold the wrapped optimizer's state dict), except that
    `skip_next_step()` turns the next `step()` into a no-op."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        # No Optimizer.__init__: it would build a second set of param groups and state.
        self.optimizer = optimizer
        self.skips_next_step = False

    state = _delegated("state")
    param_groups = _delegated("param_groups")
    defaults = _delegated("defaults")

    def add_param_group(self, param_group):
        self.optimizer.add_param_group(param_group)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True):
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def skip_next_step(self, skip: bool = True) -> None:
        self.skips_next_step = skip

    def step(self, closure=None):
        if self.skips_next_step:
            self.skips_next_step = False
            return None
        return self.optimizer.step(closure)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.optimizer!r})"


__all__ = ["SkippableOptimizer"]
