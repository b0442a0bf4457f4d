"""SPP-SCL for transformers.

The modules at this level travel to the Hub with a saved model (they import each other relatively only):
configuration, modeling, losses, processing, image utilities, pipeline, endpoint handler. The subpackages serve
training and tooling: `data` (readers, demo set, collators, feature cache), `training` (trainer, distributed
reductions), `reporting` (metrics, plots), `hub` (model card, folder checks, reference-checkpoint conversion).
"""

from .configuration_sppscl import VARIANTS, SppSclConfig
from .hub.convert_reference import convert_reference_state_dict
from .loss_sppscl import (
    SppSclLoss,
    gate_counts,
    gate_takes_inter_step,
    inter_modal_contrastive_loss,
    intra_modal_contrastive_loss,
)
from .modeling_sppscl import SppSclModel, SppSclOutput, SppSclPreTrainedModel
from .pipeline_sppscl import ImageTextClassificationPipeline
from .processing_sppscl import SppSclProcessor, load_image, paper_image_processor


__all__ = [
    "VARIANTS",
    "ImageTextClassificationPipeline",
    "SppSclConfig",
    "SppSclLoss",
    "SppSclModel",
    "SppSclOutput",
    "SppSclPreTrainedModel",
    "SppSclProcessor",
    "convert_reference_state_dict",
    "gate_counts",
    "gate_takes_inter_step",
    "inter_modal_contrastive_loss",
    "intra_modal_contrastive_loss",
    "load_image",
    "paper_image_processor",
]
