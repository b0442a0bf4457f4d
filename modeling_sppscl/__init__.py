from .loss_sppscl import (
    gate_counts,
    gate_takes_inter_step,
    inter_modal_contrastive_loss,
    intra_modal_contrastive_loss,
)
from .modeling_sppscl import SppSclModel, SppSclOutput, SppSclPreTrainedModel
