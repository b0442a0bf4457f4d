"""Losses and gate against brute-force loops over pairs, written from the formulas."""

import math

import pytest
import torch

from modeling_sppscl import gate_counts, gate_takes_inter_step, inter_modal_contrastive_loss, intra_modal_contrastive_loss


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
