"""Losses and gate against brute-force loops over pairs, written from the formulas; `SppSclLoss` against them, and
over two processes (gloo) against one process holding the concatenated batch."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import tiny_config
from modeling_sppscl import gate_counts, gate_takes_inter_step, inter_modal_contrastive_loss, intra_modal_contrastive_loss
from modeling_sppscl.loss_sppscl import LOSS_FLAVOURS, SppSclLoss


def cosine_logits(a, b, temperature):
    return [[float(torch.dot(x, y) / (x.norm() * y.norm())) / temperature for y in b] for x in a]


def brute_intra_reference(z, labels, t):
    s = cosine_logits(z, z, t)
    n = len(z)
    for i in range(n):
        s[i][i] = 0.0
        row_max = max(s[i])
        s[i] = [v - row_max for v in s[i]]
    total = 0.0
    for i in range(n):
        log_den = math.log(sum(math.exp(v) for v in s[i]))
        pos = [j for j in range(n) if j != i and labels[j] == labels[i]]
        if pos:
            total += -sum(s[i][p] - log_den for p in pos) / len(pos)
    return total / n


def brute_intra_supcon(z, labels, t):
    s = cosine_logits(z, z, t)
    n = len(z)
    losses = []
    for i in range(n):
        log_den = math.log(sum(math.exp(s[i][j]) for j in range(n) if j != i))
        pos = [j for j in range(n) if j != i and labels[j] == labels[i]]
        if pos:
            losses.append(-sum(s[i][p] - log_den for p in pos) / len(pos))
    return sum(losses) / len(losses) if losses else 0.0


def brute_inter_direction(a, b, labels, t):
    s = cosine_logits(a, b, t)
    n = len(a)
    total = 0.0
    for i in range(n):
        log_den = math.log(sum(math.exp(v) for v in s[i]))
        pos = [j for j in range(n) if labels[j] == labels[i]]
        total += -sum(s[i][p] - log_den for p in pos) / len(pos)
    return total / n


LABEL_SETS = [[0, 1, 2, 0, 1, 2, 0, 0], [0, 0, 1, 1, 2, 2, 2, 3], [1, 1, 1, 1, 1, 1, 1, 1], [0, 1, 2, 3, 4, 5, 6, 7]]


@pytest.mark.parametrize("labels", LABEL_SETS)
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_intra_modal_losses(labels, temperature):
    torch.manual_seed(len(set(labels)))
    z = torch.randn(8, 5, dtype=torch.float64)
    y = torch.tensor(labels)
    got_ref = intra_modal_contrastive_loss(z, y, temperature, "reference").item()
    got_std = intra_modal_contrastive_loss(z, y, temperature, "supcon").item()
    assert got_ref == pytest.approx(brute_intra_reference(z, labels, temperature), abs=1e-10)
    assert got_std == pytest.approx(brute_intra_supcon(z, labels, temperature), abs=1e-10)


@pytest.mark.parametrize("labels", LABEL_SETS)
def test_inter_modal_losses(labels):
    torch.manual_seed(7)
    a, b = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
    y = torch.tensor(labels)
    text_anchored = brute_inter_direction(a, b, labels, 0.07)
    image_anchored = brute_inter_direction(b, a, labels, 0.07)
    assert inter_modal_contrastive_loss(a, b, y, 0.07, "reference").item() == pytest.approx(text_anchored, abs=1e-10)
    assert inter_modal_contrastive_loss(a, b, y, 0.07, "supcon").item() == pytest.approx((text_anchored + image_anchored) / 2, abs=1e-10)


@pytest.mark.parametrize("flavour", ["reference", "supcon"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_losses_finite_with_singletons_and_differentiable(flavour, dtype):
    z = torch.randn(4, 6, dtype=dtype, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3])  # nobody has a positive
    loss = intra_modal_contrastive_loss(z, labels, 0.07, flavour) + inter_modal_contrastive_loss(z, z.flip(0), labels, 0.07, flavour)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_unknown_flavour_is_refused():
    with pytest.raises(ValueError, match="flavour"):
        intra_modal_contrastive_loss(torch.randn(3, 2), torch.tensor([0, 0, 1]), 0.07, "simclr")


def test_gate_counts_brute_force():
    torch.manual_seed(3)
    t, v = torch.randn(6, 4), torch.randn(6, 4)
    labels = [0, 1, 1, 2, 0, 1]
    sim = [[1 / (1 + math.exp(-float(torch.dot(t[i], v[j])))) for j in range(6)] for i in range(6)]
    mean_diag = sum(sim[i][i] for i in range(6)) / 6
    below = sum(sim[i][j] < mean_diag for i in range(6) for j in range(6))
    same = sum(labels[i] == labels[j] for i in range(6) for j in range(6))
    assert gate_counts(t, v, torch.tensor(labels)) == (below, same)


@pytest.mark.parametrize("below, same, takes", [(15, 24, True), (16, 24, False), (17, 24, False), (0, 1, False), (5, 9, True), (6, 9, False)])
def test_gate_threshold_is_floor_of_two_thirds(below, same, takes):
    assert gate_takes_inter_step(below, same, 2 / 3) is takes


def brute_gate_counts(t, v, labels):
    n = len(t)
    sim = [[1 / (1 + math.exp(-float(torch.dot(t[i], v[j])))) for j in range(n)] for i in range(n)]
    mean_diag = sum(sim[i][i] for i in range(n)) / n
    below = sum(sim[i][j] < mean_diag for i in range(n) for j in range(n))
    same = sum(labels[i] == labels[j] for i in range(n) for j in range(n))
    return below, same


def objective_config(flavour, **kwargs):
    return tiny_config(
        contrastive_loss=flavour, temperature=0.3, ce_loss_weight=2.0, intra_text_loss_weight=0.5,
        intra_image_loss_weight=0.25, inter_loss_weight=3.0, **kwargs,
    )


def objective_batch(n=8):
    """logits, text and image embeddings (float64) and labels of `n` samples."""
    generator = torch.Generator().manual_seed(n)
    logits, t, v = (torch.randn(n, k, dtype=torch.float64, generator=generator) for k in (3, 5, 5))
    return logits, t, v, torch.tensor(LABEL_SETS[0][:n])


@pytest.mark.parametrize("flavour", LOSS_FLAVOURS)
def test_objective_module_against_brute_force(flavour):
    logits, t, v, y = objective_batch()
    labels = y.tolist()
    objective = SppSclLoss(objective_config(flavour))
    terms = objective(logits, t, v, y)
    brute_intra = brute_intra_reference if flavour == "reference" else brute_intra_supcon
    expected = {
        "ce_loss": sum(math.log(sum(math.exp(x) for x in row)) - row[c] for row, c in zip(logits.tolist(), labels)) / len(labels),
        "intra_text_loss": brute_intra(t, labels, 0.3),
        "intra_image_loss": brute_intra(v, labels, 0.3),
    }
    expected["loss"] = 2.0 * expected["ce_loss"] + 0.5 * expected["intra_text_loss"] + 0.25 * expected["intra_image_loss"]
    assert {name: value.item() for name, value in terms.items()} == pytest.approx(expected, abs=1e-10)
    inter = brute_inter_direction(t, v, labels, 0.3)
    if flavour == "supcon":
        inter = (inter + brute_inter_direction(v, t, labels, 0.3)) / 2
    assert objective.step_two(t, v, y).item() == pytest.approx(3.0 * inter, abs=1e-10)


def test_objective_gate_reads_the_ratio_of_its_config():
    _, t, v, _ = objective_batch()
    # One label: 64 same-label pairs, more than the similarities below the matched pairs' mean.
    y = torch.zeros(len(t), dtype=torch.long)
    below, same = brute_gate_counts(t, v, y.tolist())
    decisions = {}
    for ratio in (0.1, 0.5, 2 / 3, 1.0):
        decisions[ratio] = SppSclLoss(tiny_config(gate_ratio=ratio)).gate(t, v, y)
        assert decisions[ratio] is (below < math.floor(round(same * ratio, 12))), ratio
    assert set(decisions.values()) == {True, False}


def _objective_on_one_half(rank, group_file, output_dir, flavour):
    """One of two processes: the objective on its half of `objective_batch`, gathered and not."""
    dist.init_process_group("gloo", init_method=f"file://{group_file}", rank=rank, world_size=2)
    try:
        logits, t, v, y = (x[rank * 4:(rank + 1) * 4] for x in objective_batch())
        logits, t, v = (x.clone().requires_grad_() for x in (logits, t, v))
        gathered = SppSclLoss(objective_config(flavour), gather_over_processes=True)
        terms = gathered(logits, t, v, y)
        step_one_grads = torch.autograd.grad(terms["loss"], (logits, t, v))
        inter = gathered.step_two(t, v, y)
        step_two_grads = torch.autograd.grad(inter, (t, v))
        result = {
            "terms": {name: value.detach() for name, value in terms.items()}, "inter": inter.detach(),
            "step_one_grads": step_one_grads, "step_two_grads": step_two_grads,
            "gate": gathered.gate(t, v, y), "summed_counts_gate": SppSclLoss(objective_config(flavour)).gate(t, v, y),
        }
        torch.save(result, f"{output_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("flavour", LOSS_FLAVOURS)
def test_objective_over_two_processes_equals_one_process_on_the_concatenated_batch(tmp_path, flavour):
    """`gather_over_processes`: each process's contrastive terms, gate and step 2 are those of the whole batch, and
    its gradients, averaged over the processes as data parallelism does, are the whole batch's for its rows.
    Without it, the gate decides on the counts summed over the processes."""
    mp.spawn(_objective_on_one_half, args=(tmp_path / "group", tmp_path, flavour), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    logits, t, v, y = (x.clone().requires_grad_() if x.is_floating_point() else x for x in objective_batch())
    objective = SppSclLoss(objective_config(flavour))
    terms = objective(logits, t, v, y)
    step_one_grads = torch.autograd.grad(terms["loss"], (logits, t, v))
    inter = objective.step_two(t, v, y)
    step_two_grads = torch.autograd.grad(inter, (t, v))
    # The cross-entropy stays on each process's own rows: its mean over the (equal) halves is the whole batch's.
    for name in ("ce_loss", "loss"):
        torch.testing.assert_close((ranks[0]["terms"][name] + ranks[1]["terms"][name]) / 2, terms[name].detach(), atol=1e-12, rtol=0)
    halves = (0, 1)
    counts = [brute_gate_counts(t[r * 4:(r + 1) * 4].detach(), v[r * 4:(r + 1) * 4].detach(), y[r * 4:(r + 1) * 4].tolist()) for r in halves]
    summed_gate = gate_takes_inter_step(sum(c[0] for c in counts), sum(c[1] for c in counts), 2 / 3)
    for rank, result in zip(halves, ranks):
        rows = slice(rank * 4, (rank + 1) * 4)
        for name in ("intra_text_loss", "intra_image_loss"):
            torch.testing.assert_close(result["terms"][name], terms[name].detach(), atol=1e-12, rtol=0)
        torch.testing.assert_close(result["inter"], inter.detach(), atol=1e-12, rtol=0)
        for ours, whole in zip(result["step_one_grads"] + result["step_two_grads"], step_one_grads + step_two_grads):
            torch.testing.assert_close(ours / 2, whole[rows], atol=1e-12, rtol=0)
        assert result["gate"] is objective.gate(t, v, y)
        assert result["summed_counts_gate"] is summed_gate
