"""Load checkpoints of the authors' released code into [`SppSclModel`].

The mapping is strict: every key of the source is used, every shape is checked against the target model, and
what is left over or missing is listed in the error.
"""

import argparse
import re

import torch

from ..configuration_sppscl import SppSclConfig
from ..modeling_sppscl import SppSclModel


HEAD_PREFIXES = {
    "Attention.fc.": "text_encoder.layer_attention.",
    "Attention.shared_text_encoding.LSTM.": "text_encoder.bilstm.",
    "Conv_I.": "image_encoder.",
    "Align_Module_T.shared_text_linear.": "text_projection.shared.",
    "Align_T.": "text_projection.align.",
    "Align_Module_I.shared_image_linear.": "image_projection.shared.",
    "Align_I.": "image_projection.align.",
    "Q_T.0.": "fusion.text_query.",
    "K_T.0.": "fusion.text_key.",
    "V_T.0.": "fusion.text_value.",
    "Q_I.0.": "fusion.image_query.",
    "K_I.0.": "fusion.image_key.",
    "V_I.0.": "fusion.image_value.",
    "classifier.": "fusion.fuse.",
    "fc.": "classifier.",
    "text_encoder.bert.": "text_model.",
}

# torchvision's ResNet names -> transformers' ResNetModel names, below `image_encoder.net.`.
_TORCHVISION_RESNET_RULES = [
    (re.compile(r"^conv1\.(.+)$"), r"embedder.embedder.convolution.\1"),
    (re.compile(r"^bn1\.(.+)$"), r"embedder.embedder.normalization.\1"),
    (re.compile(r"^layer(\d)\.(\d+)\.conv(\d)\.(.+)$"), lambda m: f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.layer.{int(m[3]) - 1}.convolution.{m[4]}"),
    (re.compile(r"^layer(\d)\.(\d+)\.bn(\d)\.(.+)$"), lambda m: f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.layer.{int(m[3]) - 1}.normalization.{m[4]}"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.0\.(.+)$"), lambda m: f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.shortcut.convolution.{m[3]}"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.1\.(.+)$"), lambda m: f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.shortcut.normalization.{m[3]}"),
]
_VISION_PREFIX = "image_encoder.net."
# Parts of the source the model has no place for by design: the ImageNet classifier of torchvision's ResNet
# (SPP-SCL reads layer4's map) and BERT's position-id buffer that older transformers saved.
UNUSED_SOURCE_KEYS = re.compile(r"^(image_encoder\.net\.fc\.|text_encoder\.bert\.embeddings\.position_ids$)")


def _convert_vision_key(key: str) -> str | None:
    for pattern, replacement in _TORCHVISION_RESNET_RULES:
        if pattern.match(key):
            return "vision_model." + pattern.sub(replacement, key)
    return None


def _convert_key(key: str) -> str | None:
    if key.startswith(_VISION_PREFIX):
        return _convert_vision_key(key[len(_VISION_PREFIX) :])
    for source, target in HEAD_PREFIXES.items():
        if key.startswith(source):
            return target + key[len(source) :]
    return None


def _target_shapes(config: SppSclConfig) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {key: value.shape for key, value in SppSclModel(config).state_dict().items()}


def convert_reference_state_dict(
    state_dict: dict[str, torch.Tensor], config: SppSclConfig | None = None, head_only: bool | None = None
) -> dict[str, torch.Tensor]:
    """Map a state dict of the authors' code to [`SppSclModel`]'s keys.

    Args:
        state_dict: the authors' keys (the head's, `text_encoder.bert.*`, `image_encoder.net.*`).
        config: the target configuration, for the shape check (the paper variant with bert-base and ResNet-50
            shapes by default).
        head_only: whether the source holds only the head (no tower keys); inferred when None. Then the towers'
            keys are not required.

    Raises:
        ValueError: naming every source key that has no place, every shape that differs and every target key
        the source does not provide.
    """
    config = config if config is not None else SppSclConfig(variant="paper")
    shapes = _target_shapes(config)
    converted, leftovers, mismatched = {}, [], []
    for key, value in state_dict.items():
        if UNUSED_SOURCE_KEYS.match(key):
            continue
        target = _convert_key(key)
        if target is None or target not in shapes:
            leftovers.append(key)
        elif value.shape != shapes[target]:
            mismatched.append(f"{key} -> {target}: {tuple(value.shape)} vs {tuple(shapes[target])}")
        else:
            converted[target] = value
    if head_only is None:
        head_only = not any(k.startswith(("text_model.", "vision_model.")) for k in converted)
    required = [k for k in shapes if not (head_only and k.startswith(("text_model.", "vision_model.")))]
    missing = [k for k in required if k not in converted]
    problems = []
    if leftovers:
        problems.append(f"source keys with no place in SppSclModel: {leftovers}")
    if mismatched:
        problems.append(f"shape mismatches: {mismatched}")
    if missing:
        problems.append(f"SppSclModel keys the source does not provide: {missing}")
    if problems:
        raise ValueError("Cannot convert the reference state dict; " + "; ".join(problems))
    return converted


def _unwrap_checkpoint(checkpoint) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert a checkpoint of the authors' SPP-SCL code to a save_pretrained folder.")
    parser.add_argument("checkpoint", help="the .pth file written by the authors' training script")
    parser.add_argument("output_dir", help="folder for SppSclModel.save_pretrained")
    parser.add_argument("--num_labels", type=int, default=3, help="classifier outputs of the checkpoint (3 in the released code)")
    args = parser.parse_args(argv)
    state_dict = _unwrap_checkpoint(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    config = SppSclConfig(variant="paper", num_labels=args.num_labels)
    converted = convert_reference_state_dict(state_dict, config, head_only=False)
    model = SppSclModel(config)
    model.load_state_dict(converted, strict=True)
    model.save_pretrained(args.output_dir)
    print(f"wrote {args.output_dir} ({len(converted)} tensors)")


if __name__ == "__main__":
    main()
