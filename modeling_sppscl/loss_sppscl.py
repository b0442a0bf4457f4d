"""SPP-SCL's objective: `SppSclLoss`, built from pure functions (the contrastive losses and the gate's counts).

Two flavours of the supervised contrastive loss are provided: `"reference"` reproduces the authors' released
code (self-similarity zeroed but kept in the denominator, anchors without positives count as zero in the mean,
inter-modal loss with text anchors only) and `"supcon"` is the standard formulation of Khosla et al. (2020)
(self excluded, mean over anchors that have positives, inter-modal loss averaged over both directions).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_sppscl import CONTRASTIVE_LOSSES, SppSclConfig


LOSS_FLAVOURS = CONTRASTIVE_LOSSES


def _same_label_mask(row_labels: torch.Tensor, column_labels: torch.Tensor) -> torch.Tensor:
    return row_labels.view(-1, 1) == column_labels.view(1, -1)


def _mean_log_likelihood_of_positives(
    logits: torch.Tensor, log_denominator: torch.Tensor, positives: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row mean of `logits - log_denominator` over the positive columns, and each row's positive count."""
    positives = positives.to(logits.dtype)
    counts = positives.sum(dim=1)
    summed = ((logits - log_denominator.unsqueeze(1)) * positives).sum(dim=1)
    return summed / counts.clamp(min=1.0), counts


def _check_flavour(flavour: str) -> None:
    if flavour not in LOSS_FLAVOURS:
        raise ValueError(f"flavour (SppSclConfig.contrastive_loss) must be one of {LOSS_FLAVOURS}, got {flavour!r}")


def intra_modal_contrastive_loss(
    embeds: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07, flavour: str = "supcon"
) -> torch.Tensor:
    """Supervised contrastive loss within one modality ("pull" samples of the same label together).

    Args:
        embeds: `[B, D]` embeddings (normalised here).
        labels: `[B]` integer labels.
        temperature: softmax temperature.
        flavour: `"reference"` (the authors' code) or `"supcon"` (standard).
    """
    _check_flavour(flavour)
    z = F.normalize(embeds, dim=-1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    positives = _same_label_mask(labels, labels) & ~self_mask
    if flavour == "reference":
        # Order as in the released code: zero the diagonal, then subtract the (detached) row max; the zeroed
        # self-similarity stays in the denominator.
        logits = logits.masked_fill(self_mask, 0.0)
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
        log_denominator = torch.logsumexp(logits, dim=1)
        mean_log_prob, _ = _mean_log_likelihood_of_positives(logits, log_denominator, positives)
        return -mean_log_prob.mean()
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_denominator = torch.logsumexp(logits, dim=1)
    mean_log_prob, counts = _mean_log_likelihood_of_positives(logits.masked_fill(self_mask, 0.0), log_denominator, positives)
    has_positive = counts > 0
    if not has_positive.any():
        return embeds.sum() * 0.0
    return -mean_log_prob[has_positive].mean()


def _cross_modal_direction(anchors: torch.Tensor, contrasts: torch.Tensor, labels: torch.Tensor, temperature: float, subtract_row_max: bool) -> torch.Tensor:
    logits = F.normalize(anchors, dim=-1) @ F.normalize(contrasts, dim=-1).T / temperature
    if subtract_row_max:
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    log_denominator = torch.logsumexp(logits, dim=1)
    mean_log_prob, _ = _mean_log_likelihood_of_positives(logits, log_denominator, _same_label_mask(labels, labels))
    return -mean_log_prob.mean()


def inter_modal_contrastive_loss(
    text_embeds: torch.Tensor,
    image_embeds: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.07,
    flavour: str = "supcon",
) -> torch.Tensor:
    """Supervised contrastive loss across modalities: a sample's positives are the other modality's embeddings
    of every sample with its label, its own pair included.

    `"reference"` uses text rows as anchors and image columns as contrasts, as the released training script
    calls it; `"supcon"` averages that direction with the image-anchored one.
    """
    _check_flavour(flavour)
    text_anchored = _cross_modal_direction(text_embeds, image_embeds, labels, temperature, flavour == "reference")
    if flavour == "reference":
        return text_anchored
    image_anchored = _cross_modal_direction(image_embeds, text_embeds, labels, temperature, False)
    return (text_anchored + image_anchored) / 2


def gate_counts(text_embeds: torch.Tensor, image_embeds: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """The gate's two counts on one batch.

    Returns `(below, same_label_pairs)`: how many of the `B * B` text-image similarities
    `sigmoid(t_i . v_j)` (raw dot products) lie strictly below the mean of the matched pairs' similarities, and
    how many ordered pairs `(i, j)`, `i = j` included, share a label.
    """
    with torch.no_grad():
        similarity = torch.sigmoid(text_embeds.detach() @ image_embeds.detach().T)
        below = int((similarity < similarity.diagonal().mean()).sum())
        same = int(_same_label_mask(labels, labels).sum())
    return below, same


def gate_takes_inter_step(below: int, same_label_pairs: int, ratio: float = 2.0 / 3.0) -> bool:
    """Whether the conditional inter-modal step runs: it is skipped once `below >= floor(same * ratio)`.

    The product is rounded to 12 digits before the floor so that `same * 2/3` lands on the integer the
    authors' code gets in exact cases (e.g. 24 * 2/3 = 16).
    """
    return below < math.floor(round(same_label_pairs * ratio, 12))


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every process's gradient for this process's part (torch's
    `torch.distributed.nn.all_gather` does the same but is deprecated for a private replacement)."""

    @staticmethod
    def forward(ctx, tensor):
        parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.rows = torch.distributed.get_rank(), tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def _is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` from every process concatenated along dim 0, in rank order (the same number of rows on each);
    gradients flow back to this process's part. The identity outside a distributed run."""
    return _GatherWithGrad.apply(tensor) if _is_distributed() else tensor


class SppSclLoss(nn.Module):
    """The semi-push-pull objective with the weights, temperature, loss flavour and gate ratio of `config`:
    step 1 (`forward`: weighted cross-entropy plus both intra-modal losses), the gate (`gate`) and step 2
    (`step_two`: the weighted inter-modal loss).

    With `gather_over_processes` (the trainer's `--contrastive_over_global_batch`), the contrastive terms and the
    gate see the embeddings and labels gathered from every process (gradients flow back to each process's part);
    the cross-entropy stays on the process's own batch. Without it, each process's terms cover its own batch and
    only the gate's counts are summed over the processes, so that every process decides alike. Outside a
    distributed run both are the plain batch.
    """

    def __init__(self, config: SppSclConfig, gather_over_processes: bool = False):
        super().__init__()
        self.config = config
        self.gather_over_processes = gather_over_processes

    def _contrastive_batch(self, text_embeds, image_embeds, labels):
        if not self.gather_over_processes:
            return text_embeds, image_embeds, labels
        # Labels carry no gradient: the same gather is a plain all-gather for them.
        return gather_with_grad(text_embeds), gather_with_grad(image_embeds), gather_with_grad(labels)

    def forward(
        self, logits: torch.Tensor, text_embeds: torch.Tensor, image_embeds: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Step 1: the unweighted terms `ce_loss`, `intra_text_loss`, `intra_image_loss` and their weighted sum
        `loss`."""
        config = self.config
        class_weights = None if config.class_weights is None else logits.new_tensor(config.class_weights)
        text_embeds, image_embeds, contrastive_labels = self._contrastive_batch(text_embeds, image_embeds, labels)
        terms = {
            "ce_loss": F.cross_entropy(logits, labels, weight=class_weights),
            "intra_text_loss": intra_modal_contrastive_loss(text_embeds, contrastive_labels, config.temperature, config.contrastive_loss),
            "intra_image_loss": intra_modal_contrastive_loss(image_embeds, contrastive_labels, config.temperature, config.contrastive_loss),
        }
        weights = (config.ce_loss_weight, config.intra_text_loss_weight, config.intra_image_loss_weight)
        terms["loss"] = sum(weight * term for weight, term in zip(weights, terms.values()))
        return terms

    def gate(self, text_embeds: torch.Tensor, image_embeds: torch.Tensor, labels: torch.Tensor) -> bool:
        """Whether step 2 runs on these embeddings (the same decision on every process)."""
        below, same = gate_counts(*self._contrastive_batch(text_embeds, image_embeds, labels))
        if not self.gather_over_processes and _is_distributed():
            counts = torch.tensor([below, same], dtype=torch.int64, device=labels.device)
            torch.distributed.all_reduce(counts)
            below, same = counts.tolist()
        return gate_takes_inter_step(below, same, self.config.gate_ratio)

    def step_two(self, text_embeds: torch.Tensor, image_embeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Step 2: `inter_loss_weight` times the inter-modal loss."""
        return self.config.inter_loss_weight * inter_modal_contrastive_loss(
            *self._contrastive_batch(text_embeds, image_embeds, labels), self.config.temperature, self.config.contrastive_loss
        )


__all__ = [
    "LOSS_FLAVOURS",
    "SppSclLoss",
    "gate_counts",
    "gate_takes_inter_step",
    "gather_with_grad",
    "inter_modal_contrastive_loss",
    "intra_modal_contrastive_loss",
]
