"""SPP-SCL for transformers: model, losses, processor and reference-checkpoint conversion."""

from configuration_sppscl import SppSclConfig

from .convert_reference import convert_reference_state_dict
from .loss_sppscl import (
    gate_counts,
    gate_takes_inter_step,
    inter_modal_contrastive_loss,
    intra_modal_contrastive_loss,
)
from .modeling_sppscl import SppSclModel, SppSclOutput, SppSclPreTrainedModel
from .pipeline_sppscl import ImageTextClassificationPipeline
from .processing_sppscl import SppSclProcessor, load_image, paper_image_processor


__all__ = [
    "ImageTextClassificationPipeline",
    "SppSclConfig",
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
