"""SPP-SCL's losses and gate as pure functions.

Two flavours of the supervised contrastive loss are provided: `"reference"` reproduces the authors' released
code (self-similarity zeroed but kept in the denominator, anchors without positives count as zero in the mean,
inter-modal loss with text anchors only) and `"supcon"` is the standard formulation of Khosla et al. (2020)
(self excluded, mean over anchors that have positives, inter-modal loss averaged over both directions).
"""

import math

import torch
import torch.nn.functional as F

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


def step_one_objective(
    logits: torch.Tensor,
    text_embeds: torch.Tensor,
    image_embeds: torch.Tensor,
    labels: torch.Tensor,
    config: SppSclConfig,
    contrastive_labels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The first step's objective: weighted cross-entropy plus both intra-modal losses, with the weights,
    temperature and loss flavour of `config`.

    The contrastive terms may see a larger batch than the classifier (embeddings gathered from every process):
    then pass their labels as `contrastive_labels`. Returns the unweighted terms and their weighted sum under
    `"loss"`.
    """
    contrastive_labels = labels if contrastive_labels is None else contrastive_labels
    class_weights = None if config.class_weights is None else logits.new_tensor(config.class_weights)
    terms = {
        "ce_loss": F.cross_entropy(logits, labels, weight=class_weights),
        "intra_text_loss": intra_modal_contrastive_loss(text_embeds, contrastive_labels, config.temperature, config.contrastive_loss),
        "intra_image_loss": intra_modal_contrastive_loss(image_embeds, contrastive_labels, config.temperature, config.contrastive_loss),
    }
    weights = (config.ce_loss_weight, config.intra_text_loss_weight, config.intra_image_loss_weight)
    terms["loss"] = sum(weight * term for weight, term in zip(weights, terms.values()))
    return terms


def step_two_loss(text_embeds: torch.Tensor, image_embeds: torch.Tensor, labels: torch.Tensor, config: SppSclConfig) -> torch.Tensor:
    """The conditional second step's objective: the weighted inter-modal loss with `config`'s settings."""
    return config.inter_loss_weight * inter_modal_contrastive_loss(
        text_embeds, image_embeds, labels, config.temperature, config.contrastive_loss
    )


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


__all__ = [
    "LOSS_FLAVOURS",
    "gate_counts",
    "gate_takes_inter_step",
    "inter_modal_contrastive_loss",
    "intra_modal_contrastive_loss",
    "step_one_objective",
    "step_two_loss",
]
