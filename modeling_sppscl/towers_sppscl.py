"""Towers of any family for SPP-SCL: which half of a dual-encoder checkpoint to take, which text towers the head can
read, and the vision tower's output as the `[B, C, h, w]` map the ConvP branch expects.

The head reads position 0 of the text tower as the summary of the text (hierarchical attention) and pools the
vision tower's map after a 1x1 convolution. A CNN gives that map directly; a vision transformer gives a sequence
of tokens, some of which (class, distillation, register tokens) summarise the image instead of covering a patch:
those are dropped and the patches are laid back on their grid.
"""

import inspect
import math

import torch
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_MAPPING,
)


# Tokens that token-sequence vision towers put before their patches, beside the register tokens that a config
# declares as `num_register_tokens`. Swin's last stage is all patches.
SUMMARY_TOKENS = {
    "vit": 1,  # class
    "deit": 2,  # class, distillation
    "clip_vision_model": 1,  # class
    "siglip_vision_model": 0,
    "dinov2": 1,  # class
    "dinov2_with_registers": 1,  # class (+ registers)
    "swin": 0,
}
# Dual encoders whose checkpoints hold each half under the names the half's own model class loads (`vision_model.`,
# `text_model.`). Other composite configs (e.g. a vision-language model's) are not split: their weights would not load.
DUAL_ENCODERS = ("clip", "siglip")
# Text towers whose position 0 does not summarise the text, with the pooling they would need instead.
POOLING_NEEDED = {
    "clip_text_model": "end-of-text-token pooling (CLIP's text tower is causal: only its end-of-text token has read "
    "the whole text)",
    "siglip_text_model": "last-position pooling (SigLIP's text tower is trained to summarise the text at its last "
    "position)",
}
DECODER_POOLING = "last-token pooling (a causal decoder's last real token is the only one that has read the whole text)"
ENCODER_DECODER_POOLING = "mean pooling over the encoder's tokens (an encoder-decoder has no summary token)"
# Hub keyword arguments that also apply to reading a tower's config.
CONFIG_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "trust_remote_code", "force_download", "subfolder")


def tower_half(config: PreTrainedConfig, modality: str) -> PreTrainedConfig:
    """The `modality` ("text" or "vision") half of a dual-encoder config (CLIP, SigLIP), else `config` itself."""
    return getattr(config, f"{modality}_config") if config.model_type in DUAL_ENCODERS else config


def text_pooling_refusal(config: PreTrainedConfig) -> str | None:
    """Why the head cannot read this text tower (the pooling it would need), or None where position 0 summarises."""
    model_type = config.model_type
    if model_type in POOLING_NEEDED:
        return POOLING_NEEDED[model_type]
    if getattr(config, "is_encoder_decoder", False):
        return ENCODER_DECODER_POOLING
    decoder_only = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if decoder_only or getattr(config, "is_decoder", False):
        return DECODER_POOLING
    return None


def check_text_tower(config: PreTrainedConfig) -> None:
    refusal = text_pooling_refusal(config)
    if refusal is not None:
        raise ValueError(
            f"The text tower ({config.model_type}) cannot feed SPP-SCL, whose head reads position 0 of an encoder as "
            f"the summary of the text: it would need {refusal}. Use an encoder such as BERT, RoBERTa, XLM-R, "
            "DeBERTa-v2, ModernBERT, MPNet or an E5 model"
        )


def load_tower(name_or_path: str, modality: str, **kwargs) -> PreTrainedModel:
    """`AutoModel.from_pretrained`, except that a dual-encoder checkpoint gives its `modality` half (its weights
    only), and that a text tower the head cannot read is refused before its weights load."""
    config = AutoConfig.from_pretrained(name_or_path, **{name: kwargs[name] for name in CONFIG_KWARGS if name in kwargs})
    half = tower_half(config, modality)
    if modality == "text":
        check_text_tower(half)
    if half is config:
        return AutoModel.from_pretrained(name_or_path, **kwargs)
    model, loading = MODEL_MAPPING[type(half)].from_pretrained(name_or_path, config=half, output_loading_info=True, **kwargs)
    if loading["missing_keys"]:
        raise ValueError(
            f"{name_or_path}: the {config.model_type} checkpoint has no weights for its {modality} half "
            f"({sorted(loading['missing_keys'])[:3]}, ...)"
        )
    return model


def accepts_input(model: PreTrainedModel, name: str) -> bool:
    """Whether `model.forward` takes the input `name` (ModernBERT and MPNet take no `token_type_ids`)."""
    return name in inspect.signature(model.forward).parameters


def patch_grid(num_patches: int, height: int, width: int) -> tuple[int, int]:
    """The `(rows, columns)` grid of `num_patches` patch tokens cut from a `height` x `width` image: of the ways to
    factor the count, the one closest to the image's aspect ratio (a patch grid is the image shrunk by the patch
    size, rounded at the edges, so its aspect ratio stays the image's)."""
    aspect = math.log(height / width)
    rows = min(
        (rows for rows in range(1, num_patches + 1) if num_patches % rows == 0),
        key=lambda rows: abs(math.log(rows * rows / num_patches) - aspect),
    )
    return rows, num_patches // rows


def image_feature_map(last_hidden_state: torch.Tensor, config: PreTrainedConfig, image_size: tuple[int, int]) -> torch.Tensor:
    """The vision tower's `last_hidden_state` as a `[B, C, h, w]` map: a CNN's map as it is; a token sequence
    `[B, prefix + h * w, C]` without its prefix tokens, laid on the patch grid of an image of `image_size`."""
    if last_hidden_state.dim() == 4:
        return last_hidden_state
    if last_hidden_state.dim() != 3 or config.model_type not in SUMMARY_TOKENS:
        raise ValueError(
            f"The vision tower ({config.model_type}) returned a last_hidden_state of shape "
            f"{tuple(last_hidden_state.shape)}; SPP-SCL takes a [batch, channels, height, width] map or the patch "
            f"tokens of one of {sorted(SUMMARY_TOKENS)}"
        )
    prefix = SUMMARY_TOKENS[config.model_type] + getattr(config, "num_register_tokens", 0)
    patches = last_hidden_state[:, prefix:]
    rows, columns = patch_grid(patches.shape[1], *image_size)
    # Patch tokens are in raster order: row by row, left to right.
    return patches.unflatten(1, (rows, columns)).permute(0, 3, 1, 2)


__all__ = ["DUAL_ENCODERS", "SUMMARY_TOKENS", "accepts_input", "check_text_tower", "image_feature_map", "load_tower", "patch_grid", "tower_half"]
