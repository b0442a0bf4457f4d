"""`SkippableOptimizer`: a skipped step moves no parameter and no optimizer state (AdamW's weight decay and momentum
would otherwise move every parameter on zero gradients); an unskipped step is the wrapped optimizer's; schedulers
and checkpoints see the wrapped optimizer's groups and state."""

import copy

import torch

from modeling_sppscl.training.skippable_optimizer import SkippableOptimizer


def trained_once():
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(5))
    optimizer = torch.optim.AdamW([param], lr=0.1, weight_decay=0.1)
    param.grad = torch.randn(5)
    optimizer.step()
    return param, optimizer


def test_a_skipped_step_moves_nothing_and_the_next_one_is_taken():
    param, inner = trained_once()
    reference_param, reference = copy.deepcopy((param, inner))
    before = param.detach().clone()
    optimizer = SkippableOptimizer(inner)
    param.grad = torch.zeros(5)
    optimizer.skip_next_step()
    optimizer.step()
    assert torch.equal(param, before) and int(inner.state[param]["step"]) == 1
    optimizer.step()  # zero gradients: AdamW's momentum and weight decay still move the parameter
    reference_param.grad = torch.zeros(5)
    reference.step()
    assert torch.equal(param, reference_param) and not torch.equal(param, before)
    assert int(inner.state[param]["step"]) == 2


def test_schedulers_and_checkpoints_see_the_wrapped_optimizer():
    param, inner = trained_once()
    optimizer = SkippableOptimizer(inner)
    assert optimizer.param_groups is inner.param_groups and optimizer.state is inner.state
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    optimizer.step()
    scheduler.step()
    assert inner.param_groups[0]["lr"] == 0.05
    state = optimizer.state_dict()
    assert state.keys() == inner.state_dict().keys() and state["state"][0]["step"] == 2
