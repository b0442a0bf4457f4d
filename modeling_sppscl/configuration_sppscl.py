"""Configuration of SPP-SCL (Semi-Push-Pull Supervised Contrastive Learning) for image-text classification."""

from typing import ClassVar

import transformers
from packaging import version


# This file also runs as remote code (trust_remote_code=True) where older transformers may be installed: say what
# to upgrade instead of failing on a missing name below.
MIN_TRANSFORMERS_VERSION = "5.20"
if version.parse(transformers.__version__) < version.parse(MIN_TRANSFORMERS_VERSION):
    raise ImportError(
        f"SPP-SCL needs transformers>={MIN_TRANSFORMERS_VERSION}, found {transformers.__version__}: "
        f"pip install -U 'transformers>={MIN_TRANSFORMERS_VERSION}'"
    )

from transformers import AutoConfig, PreTrainedConfig  # noqa: E402
from transformers.configuration_utils import SubConfigSpec  # noqa: E402

from .towers_sppscl import check_text_tower, tower_half  # noqa: E402


# Each switch below is one place where the authors' released code makes a sample's output depend on the
# other samples of its batch (or on padding). `variant` fills every switch left at None.
VARIANTS: dict[str, dict[str, str | bool]] = {
    "paper": {
        "fusion_attention": "batch",
        "text_pooling": "padded_mean",
        "contrastive_loss": "reference",
        "frozen_towers_follow_train_mode": True,
    },
    "default": {
        "fusion_attention": "sample",
        "text_pooling": "masked_mean",
        "contrastive_loss": "supcon",
        "frozen_towers_follow_train_mode": False,
    },
}

# The two flavours of the supervised contrastive loss (see `loss_sppscl`).
CONTRASTIVE_LOSSES = ("reference", "supcon")
CHOICES: dict[str, tuple[str, ...]] = {
    "variant": tuple(VARIANTS),
    "fusion_attention": ("batch", "sample"),
    "text_pooling": ("padded_mean", "masked_mean"),
    "contrastive_loss": CONTRASTIVE_LOSSES,
}
# The switches a variant sets, in the order the docs and the model card list them.
SWITCHES = tuple(VARIANTS["paper"])

# The authors' processor pads every text to this many tokens; the paper variant's text pooling counts them all.
PAPER_TEXT_MAX_LENGTH = 202


class SppSclConfig(PreTrainedConfig):
    r"""
    Configuration of [`SppSclModel`]: a text tower, a vision tower and the SPP-SCL head.

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Any transformers text encoder that returns hidden states and summarises the text at position 0 (BERT
            base shape by default); decoders are refused. A dual-encoder config gives its text half.
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Any transformers vision model whose `last_hidden_state` is a `[B, C, h, w]` map (ResNet-50 shape by
            default), or a vision transformer listed in `towers_sppscl.SUMMARY_TOKENS`; a dual-encoder config
            (CLIP, SigLIP) gives its vision half. `C` is read from `hidden_sizes[-1]` (or `hidden_size`).
        variant (`str`, defaults to `"default"`):
            `"paper"` reproduces the authors' released code number for number; `"default"` makes every
            prediction independent of the rest of the batch and of padding. Each of the four switches below
            overrides the variant's choice when set.
        fusion_attention (`str`, *optional*):
            `"batch"`: the paper's cross-modal fusion attends across the samples of the batch (a `[B, B]`
            attention), so a prediction changes with its batch-mates. `"sample"` (default variant): attention
            between the two modality vectors of one sample, with the same six projections, so the cross-modal
            exchange the paper wants is kept while each prediction only sees its own pair.
        text_pooling (`str`, *optional*):
            `"padded_mean"`: the paper's mean over all `L - 2` positions after the BiLSTM, padding included (its
            processor pads to 202). `"masked_mean"` (default variant): the BiLSTM runs on the packed real tokens
            (`[CLS]` and the final separator dropped) and the mean covers only them, so padding changes nothing.
        contrastive_loss (`str`, *optional*):
            `"reference"`: the released code's supervised contrastive loss (self-similarity zeroed but kept in
            the denominator, anchors without positives count as zero, inter-modal loss with text anchors only).
            `"supcon"` (default variant): standard SupCon (self excluded, mean over anchors that have positives)
            and a symmetric inter-modal loss.
        frozen_towers_follow_train_mode (`bool`, *optional*):
            The paper puts its frozen towers in train mode with the rest (ResNet BatchNorm uses batch statistics,
            BERT dropout is on). The default variant keeps frozen towers in eval mode, which also makes their
            outputs cacheable.
        num_text_layers (`int`, defaults to 4): hidden states of the text tower fed to the hierarchical attention.
        lstm_hidden_size (`int`, defaults to 64): BiLSTM units per direction.
        image_reduction_channels (`int`, defaults to 128): output channels of the 1x1 convolution on the image map.
        shared_dim (`int`, defaults to 32): size of the shared embedding space (`text_embeds`, `image_embeds`).
        fusion_dim (`int`, defaults to 64): size of `fused_embeds`.
        dropout (`float`, defaults to 0.2): dropout of the head.
        temperature (`float`, defaults to 0.07): temperature of the contrastive losses.
        ce_loss_weight, intra_text_loss_weight, intra_image_loss_weight, inter_loss_weight (`float`):
            weights of the loss terms (5, 1, 1, 1 as in the released training script).
        class_weights (`list[float]`, *optional*): per-class weights of the cross-entropy, in label-id order
            (e.g. to weigh up a small class); None: unweighted, as in the paper.
        gate_ratio (`float`, defaults to 2/3): the inter-modal step is skipped when the number of text-image
            similarities below the mean matched-pair similarity reaches `floor(same_label_pairs * gate_ratio)`.
        freeze_text_model, freeze_vision_model (`bool`, defaults to `True`): freeze the towers.

    Example:

    ```python
    >>> from configuration_sppscl import SppSclConfig
    >>> config = SppSclConfig(variant="paper", id2label={0: "positive", 1: "neutral", 2: "negative"})
    >>> config.fusion_attention
    'batch'
    ```
    """

    model_type = "sppscl"
    # Trainer.predict keeps only the logits; the embeddings are read from the model directly where needed.
    keys_to_ignore_at_inference: ClassVar[list[str]] = [
        "text_embeds", "image_embeds", "fused_embeds", "ce_loss", "intra_text_loss", "intra_image_loss"
    ]
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="resnet"),
    }

    text_config: PreTrainedConfig | dict | None = None
    vision_config: PreTrainedConfig | dict | None = None
    variant: str = "default"
    fusion_attention: str | None = None
    text_pooling: str | None = None
    contrastive_loss: str | None = None
    frozen_towers_follow_train_mode: bool | None = None
    num_text_layers: int = 4
    lstm_hidden_size: int = 64
    image_reduction_channels: int = 128
    shared_dim: int = 32
    fusion_dim: int = 64
    dropout: float = 0.2
    temperature: float = 0.07
    ce_loss_weight: float = 5.0
    intra_text_loss_weight: float = 1.0
    intra_image_loss_weight: float = 1.0
    inter_loss_weight: float = 1.0
    class_weights: list[float] | None = None
    gate_ratio: float = 2.0 / 3.0
    freeze_text_model: bool = True
    freeze_vision_model: bool = True

    def __post_init__(self, **kwargs):
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = {0: "positive", 1: "neutral", 2: "negative"}
        self._fill_variant_switches()
        self._check_values()
        super().__post_init__(**kwargs)
        self.text_config = tower_half(self.text_config, "text")
        self.vision_config = tower_half(self.vision_config, "vision")
        self._check_towers()

    def _fill_variant_switches(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"SppSclConfig.variant must be one of {CHOICES['variant']}, got {self.variant!r}")
        for name, value in VARIANTS[self.variant].items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def _check_values(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"SppSclConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("num_text_layers", "lstm_hidden_size", "image_reduction_channels", "shared_dim", "fusion_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SppSclConfig.{name} must be an integer >= 1, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SppSclConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not self.temperature > 0.0:
            raise ValueError(f"SppSclConfig.temperature must be > 0, got {self.temperature!r}")
        if not 0.0 < self.gate_ratio <= 1.0:
            raise ValueError(f"SppSclConfig.gate_ratio must be in (0, 1], got {self.gate_ratio!r}")
        for name in ("ce_loss_weight", "intra_text_loss_weight", "intra_image_loss_weight", "inter_loss_weight"):
            if getattr(self, name) < 0.0:
                raise ValueError(f"SppSclConfig.{name} must be >= 0, got {getattr(self, name)!r}")

    def _check_towers(self) -> None:
        check_text_tower(self.text_config)
        text_layers = getattr(self.text_config, "num_hidden_layers", None)
        if text_layers is not None and self.num_text_layers > text_layers + 1:
            raise ValueError(
                f"SppSclConfig.num_text_layers must be in [1, {text_layers + 1}] for a text tower with "
                f"{text_layers} layers (it returns {text_layers + 1} hidden states), got {self.num_text_layers}"
            )
        if self.image_feature_channels is None:
            raise ValueError(
                f"SppSclConfig.vision_config ({self.vision_config.model_type}) declares neither `hidden_sizes` "
                "nor `hidden_size`, so the channel count of its feature map is unknown"
            )
        if self.num_labels < 2:
            raise ValueError(f"SppSclConfig needs at least 2 labels, got {self.num_labels}")
        if self.class_weights is not None and (
            len(self.class_weights) != self.num_labels or not all(weight > 0 for weight in self.class_weights)
        ):
            raise ValueError(
                f"SppSclConfig.class_weights must hold {self.num_labels} positive weights (one per label, in id "
                f"order), got {self.class_weights!r}"
            )

    @property
    def image_feature_channels(self) -> int | None:
        """Channels of the vision tower's `last_hidden_state` map."""
        hidden_sizes = getattr(self.vision_config, "hidden_sizes", None)
        if hidden_sizes:
            return int(hidden_sizes[-1])
        hidden_size = getattr(self.vision_config, "hidden_size", None)
        return int(hidden_size) if hidden_size is not None else None

    @property
    def text_max_length(self) -> int | None:
        """Fixed padding length the processor uses for this variant (None: pad to the longest text)."""
        return PAPER_TEXT_MAX_LENGTH if self.text_pooling == "padded_mean" else None

    @classmethod
    def from_text_vision_configs(cls, text_config: PreTrainedConfig, vision_config: PreTrainedConfig, **kwargs):
        """Build a config from the two towers' configs (as `VisionTextDualEncoderConfig` does)."""
        return cls(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), **kwargs)


AutoConfig.register(SppSclConfig.model_type, SppSclConfig, exist_ok=True)
SppSclConfig.register_for_auto_class()

__all__ = ["SppSclConfig", "VARIANTS"]
