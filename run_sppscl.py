#!/usr/bin/env python
r"""Fine-tune, evaluate and predict with SPP-SCL on an image-text classification dataset.

With no arguments at all, runs the built-in demo: a synthetic image-text set, tiny towers, 8 epochs, into
outputs/demo (about 1.5 minutes on 2 idle CPU cores); options without a data source change the demo (`--num_train_epochs 2`).
Otherwise name the data, the towers (or a saved model) and --output_dir:

    python run_sppscl.py                      # the built-in demo
    python run_sppscl.py --data_dir ../shared/data/mvsa_single \
        --text_model_name_or_path sentence-transformers/all-MiniLM-L6-v2 --vision_model_name_or_path microsoft/resnet-50 \
        --output_dir outputs/mvsa_single --do_train --do_eval --do_predict

A run that builds a model from two towers trains its variant's recipe (below) wherever the command line leaves an
option unset; every flag overrides it. It runs as is on a CPU-only machine; `accelerate launch --multi_gpu
--num_processes N run_sppscl.py ...` runs N processes, on GPUs or, on a machine without one, N CPU processes
joined into one job (no `--cpu` needed). Every `TrainingArguments` option works (`--push_to_hub`,
`--resume_from_checkpoint`, `--log_level`, `--disable_tqdm`, ...), listed after the SPP-SCL ones. The output folder
also gets a Gradio Space (`space/`) for the trained model; `--push_space USER/NAME` publishes it. A bad option,
file or data row ends the run with one `error:` line (the traceback only with `--log_level debug`).
"""

import argparse
import dataclasses
import importlib.util
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import huggingface_hub
import torch
import transformers
from transformers import (
    AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor, AutoTokenizer, HfArgumentParser, TrainingArguments, set_seed,
)

from modeling_sppscl import SppSclConfig, SppSclModel, SppSclProcessor
from modeling_sppscl.configuration_sppscl import VARIANTS
from modeling_sppscl.data.collators import ImageTextCollator
from modeling_sppscl.data.demo import build_demo_tokenizer, load_demo_data
from modeling_sppscl.data.extraction import PRECISIONS, STORAGE_DTYPES
from modeling_sppscl.data.device_cache import DeviceCacheCollator, DeviceFeatureCache, fits_on_device
from modeling_sppscl.data.feature_cache import CachedFeatureCollator, extract_features, frozen_towers
from modeling_sppscl.data.preflight import check_before_training, check_output_dir, check_splits, update_image_counts
from modeling_sppscl.data.readers import load_clmlf_folder, load_csv_or_jsonl, load_datasets_dataset, load_hfm_text_files
from modeling_sppscl.data.validation import apply_pixel_problems
from modeling_sppscl.hub.publish import check_hub_access, write_card, write_model_space
from modeling_sppscl.hub.space import push_space
from modeling_sppscl.reporting.metrics import build_compute_metrics
from modeling_sppscl.reporting.predictions import write_predictions
from modeling_sppscl.training.arguments import (
    ArgumentParser, UsageError, UserError, as_flags, check_config_overrides, check_numbers, config_error, explicit_options,
    group_options, parse_config_overrides, user_errors,
)
from modeling_sppscl.training.checkpoints import last_complete_checkpoint
from modeling_sppscl.training.recipes import RAREST_X2, RECIPES, format_value, resolve_class_weights, unset_values
from modeling_sppscl.training.trainer import TOWER_PREFIXES, SppSclTrainer, SppSclTrainingArguments


logger = logging.getLogger(__name__)

DEMO_OUTPUT_DIR = "outputs/demo"
# The demo's options; a command line without a data source runs the demo with its own options over these.
DEMO_PRESET = {
    "output_dir": DEMO_OUTPUT_DIR, "do_train": True, "do_eval": True, "do_predict": True,
    "num_train_epochs": 8, "per_device_train_batch_size": 32, "per_device_eval_batch_size": 64,
    "learning_rate": 3e-3, "eval_strategy": "epoch", "save_strategy": "epoch", "save_total_limit": 1,
    "load_best_model_at_end": True, "logging_strategy": "epoch", "report_to": "none", "seed": 0,
}
DATA_SOURCES = ("data_dir", "hfm_text_dir", "dataset_name", "train_file", "validation_file", "test_file")
MODEL_SOURCES = ("model_name_or_path", "text_model_name_or_path", "vision_model_name_or_path")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "An SPP-SCL checkpoint (folder or Hub id)."})
    text_model_name_or_path: str | None = field(default=None, metadata={"help": "Pretrained text tower (with its tokenizer)."})
    vision_model_name_or_path: str | None = field(default=None, metadata={"help": "Pretrained vision tower (with its image processor)."})
    variant: str = field(
        default="default", metadata={"help": "'paper' (the authors' code, number for number) or 'default'; also picks the recipe.",
                                     "choices": tuple(VARIANTS)}
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "Comma-separated SppSclConfig overrides, e.g. 'dropout=0.1,temperature=0.1' (an unknown "
                                "key or a wrong type is refused); class_weights=rarest_x2 weighs the rarest training class 2."}
    )
    freeze_text_model: bool = field(
        default=True, metadata={"help": "Whether the text tower stays frozen; --no_freeze_text_model fine-tunes it too (as the "
                                "default variant's recipe does, see Recipes above)."}
    )
    freeze_vision_model: bool = field(
        default=True, metadata={"help": "Whether the vision tower stays frozen (default); --no_freeze_vision_model fine-tunes it too."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded towers are stored."})
    tower_module: str | None = field(
        default=None,
        metadata={"help": "A Python file (or dotted module) imported before any model loads, for a tower type transformers "
                  "does not know: importing it registers the type with AutoConfig/AutoModel (e.g. "
                  "experiments/efficientnet_lite_tower.py). Pass it again to evaluate or predict with the trained model."},
    )


@dataclass
class DataArguments:
    data_dir: str | None = field(default=None, metadata={"help": "A folder in CLMLF's layout (train/dev|valid/test.json + images/)."})
    hfm_text_dir: str | None = field(default=None, metadata={"help": "A folder with HFM's original train.txt/valid.txt/test.txt."})
    dataset_name: str | None = field(default=None, metadata={"help": "A `datasets` dataset: Hub id or save_to_disk folder."})
    train_file: str | None = field(default=None, metadata={"help": "CSV or JSON Lines with image, text and label columns."})
    validation_file: str | None = field(default=None, metadata={"help": "CSV or JSON Lines for model selection."})
    test_file: str | None = field(default=None, metadata={"help": "CSV or JSON Lines for predictions."})
    image_dir: str | None = field(default=None, metadata={"help": "Image folder for --hfm_text_dir."})
    image_column: str = field(default="image", metadata={"help": "Image column (a path or an image) of CSV/JSONL files and datasets."})
    text_column: str = field(default="text", metadata={"help": "Text column of CSV/JSONL files and datasets."})
    label_column: str = field(default="label", metadata={"help": "Label column (name or id) of CSV/JSONL files and datasets."})
    class_names: str | None = field(default=None, metadata={"help": "Comma-separated class names, in label-id order."})
    missing_image: str = field(
        default="error", metadata={"help": "A missing or corrupt image: 'error', 'skip' the pair, or 'blank' image.", "choices": ("error", "skip", "blank")}
    )
    empty_text: str = field(
        default="error", metadata={"help": "An empty text, or one with no token the tokenizer knows: 'error', or 'skip' the pair.",
                                   "choices": ("error", "skip")}
    )
    allow_images_outside_data_dir: bool = field(
        default=False, metadata={"help": "Read image paths that lead outside the data folder (`../`, absolute); refused by default."}
    )
    strict_data: bool = field(
        default=False, metadata={"help": "Refuse questionable rows (conflicting duplicate ids, dev/test pairs also in train, a "
                                 "class without dev pairs) instead of warning and reporting them."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training pairs (quick runs)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N validation pairs."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Keep only the first N test pairs."})
    cache_features: bool | None = field(
        default=None, metadata={"help": "Cache the frozen towers' outputs (default: on when a tower is frozen; with one tower "
                                 "trainable, only the frozen one is cached and the other runs on raw inputs)."}
    )
    feature_cache_dir: str | None = field(
        default=None, metadata={"help": "Feature cache folder (default: sppscl_features under the datasets cache, $HF_DATASETS_CACHE "
                                "or $HF_HOME/datasets; never in the output folder, so a push cannot take it along)."}
    )
    feature_cache_dtype: str = field(
        default="float32", metadata={"help": "'float32' or 'float16' storage of cached features.", "choices": tuple(STORAGE_DTYPES)}
    )
    feature_extraction_precision: str = field(
        default="auto", metadata={"help": "Autocast dtype of the towers during extraction: 'auto' (bfloat16 on CUDA, float16 "
                                  "without bfloat16, float32 on CPU), 'float32', 'bfloat16' or 'float16'.",
                                  "choices": ("auto", *PRECISIONS)}
    )
    feature_cache_on_device: str = field(
        default="auto", metadata={"help": "Hold the cached features in accelerator memory and train the head from index "
                                  "selections there: 'auto' (on CUDA when they fit in half the free memory), 'true', 'false'.",
                                  "choices": ("auto", "true", "false")}
    )
    plot: bool = field(default=False, metadata={"help": "Write t-SNE, confusion-matrix and training-curve PNGs."})
    head_num_threads: int | None = field(
        default=None,
        metadata={"help": "CPU threads for training the head after feature extraction (1 was several times faster "
                  "for the paper's BiLSTM on a busy 2-core machine; see docs/PERFORMANCE.md)."},
    )


@dataclass
class SpaceArguments:
    write_space: bool = field(
        default=True, metadata={"help": "Write a Gradio Space for the trained model into <output_dir>/space (app, metadata, examples)."}
    )
    push_space: str | None = field(
        default=None, metadata={"help": "Publish that Space to this Hub repository (USER/NAME); needs --push_to_hub (the app loads the model from its repo)."}
    )


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option (as HfArgumentParser does), the description's examples kept as written."""


def recipes_help() -> str:
    lines = ["Recipes (each value applies where the command line leaves that option or --config_overrides key unset):"]
    for name, recipe in RECIPES.items():
        lines.append(f"  --variant {name} ({recipe.source}):\n      {recipe.describe()}")
    return "\n".join(lines)


def build_parser() -> HfArgumentParser:
    parser = ArgumentParser((ModelArguments, DataArguments, SpaceArguments, SppSclTrainingArguments),
                            description=f"{__doc__}\n{recipes_help()}", formatter_class=HelpFormatter,
                            usage="%(prog)s [SPP-SCL options] [TrainingArguments options]  (or %(prog)s ARGS.json)")
    training_only = {f.name for f in dataclasses.fields(SppSclTrainingArguments)} - {f.name for f in dataclasses.fields(TrainingArguments)}
    model, data = [f.name for f in dataclasses.fields(ModelArguments)], [f.name for f in dataclasses.fields(DataArguments)]
    group_options(parser, [("SPP-SCL model", model), ("SPP-SCL data", data), ("SPP-SCL training", training_only),
                           ("SPP-SCL publishing", [f.name for f in dataclasses.fields(SpaceArguments)])],
                  rest_title="TrainingArguments (transformers)")
    return parser


def parse_arguments(argv: list[str] | None = None):
    """The four argument objects and the options the command line set. A command line without a data source
    runs the demo (its preset fills what the command leaves unset); one that builds a model from towers gets its
    variant's recipe the same way (logged, and kept in `training_args.applied_recipe`)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        with user_errors(argv[0], (OSError, ValueError), UsageError):
            argv = as_flags(json.loads(Path(argv[0]).read_text()))
    given = explicit_options(parser, argv)
    filled, recipe, recipe_config = preset_values(given)
    if not torch.accelerator.is_available() and "dataloader_pin_memory" not in given:
        filled["dataloader_pin_memory"] = False  # pinned memory helps only copies to an accelerator
    # TrainingArguments' own checks (strategies that do not match, ...) raise ValueError.
    with user_errors(kinds=(ValueError,), error_type=UsageError):
        parsed = parser.parse_args_into_dataclasses(args=[*argv, *as_flags(filled)])
    training_args = parsed[-1]
    if recipe is not None:
        training_args.applied_recipe = {"name": recipe.name, "source": recipe.source,
                                        "values": {name: value for name, value in filled.items() if name in recipe.arguments},
                                        "config": recipe_config}
    return (*parsed, set(given))


def preset_values(given: dict) -> tuple[dict, object, dict]:
    """The values the demo preset or the recipe adds to what the command line `given` sets, the recipe, and the
    config values it adds to --config_overrides."""
    if not any(given.get(name) for name in DATA_SOURCES):
        named = [f"--{name}" for name in MODEL_SOURCES if given.get(name)]
        if named:
            raise UsageError(f"{' and '.join(named)} given but no data: pass --data_dir, --train_file, --dataset_name or "
                             "--hfm_text_dir (leave out every model flag to run the built-in demo)")
        return {name: value for name, value in DEMO_PRESET.items() if name not in given}, None, {}
    if given.get("model_name_or_path"):
        return {}, None, {}
    if not (given.get("text_model_name_or_path") and given.get("vision_model_name_or_path")):
        raise UsageError("a run on your data needs --model_name_or_path, or both --text_model_name_or_path and "
                         "--vision_model_name_or_path")
    recipe = RECIPES[given.get("variant", "default")]
    overrides = check_config_overrides(parse_config_overrides(given.get("config_overrides")), {"class_weights": (RAREST_X2,)})
    filled, config = unset_values(recipe, set(given), overrides)
    if config:
        filled["config_overrides"] = ",".join(f"{key}={json.dumps(value)}" for key, value in {**overrides, **config}.items())
    return filled, recipe, config


def is_demo(data_args: DataArguments) -> bool:
    return not any(getattr(data_args, name) for name in DATA_SOURCES)


def load_data(data_args: DataArguments, seed: int, model_name_or_path: str | None = None):
    """The splits (`train`, `validation`, `test`) with columns id, text, image, label, and the label names.

    The label set comes from --class_names, else from the checkpoint being evaluated, else from the training
    split. Images are checked from their headers here; their pixels meet the --missing_image policy at their one
    decode (`prepare_splits`), so that truncated files do too.
    """
    names = data_args.class_names.split(",") if data_args.class_names else checkpoint_label_names(model_name_or_path)
    common = {"label_names": names, "missing_image": data_args.missing_image, "verify_pixels": False, "empty_text": data_args.empty_text,
              "allow_images_outside_data_dir": data_args.allow_images_outside_data_dir}
    if is_demo(data_args):
        return load_demo_data(seed=seed)
    if data_args.data_dir:
        return load_clmlf_folder(data_args.data_dir, require_images=data_args.missing_image != "blank", **common)
    if data_args.hfm_text_dir:
        files = [Path(data_args.hfm_text_dir) / name for name in ("train.txt", "valid.txt", "test.txt")]
        return load_hfm_text_files(*[path if path.is_file() else None for path in files], image_dir=data_args.image_dir, **common)
    columns = {"image_column": data_args.image_column, "text_column": data_args.text_column, "label_column": data_args.label_column}
    if data_args.dataset_name:
        return load_datasets_dataset(data_args.dataset_name, **columns, **common)
    return load_csv_or_jsonl(
        train_file=data_args.train_file, validation_file=data_args.validation_file, test_file=data_args.test_file, **columns, **common
    )


def checkpoint_label_names(model_name_or_path: str | None) -> list[str] | None:
    """The class names of an SPP-SCL checkpoint, in id order (None without one)."""
    if not model_name_or_path:
        return None
    with user_errors(f"--model_name_or_path {model_name_or_path}", (OSError,)):
        id2label = AutoConfig.from_pretrained(model_name_or_path).id2label
    return [id2label[index] for index in range(len(id2label))]


def demo_towers():
    """Tiny randomly initialised towers for the demo: a 4-layer BERT on the demo vocabulary and a 2-stage ResNet."""
    tokenizer = build_demo_tokenizer()
    text_config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=64,
    )
    vision_config = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1], layer_type="basic")
    image_processor = transformers.ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=1.0)
    return text_config, vision_config, tokenizer, image_processor


def import_tower_module(name: str | None) -> None:
    if name is None:
        return
    if name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"--tower_module {name}: no such file")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise ValueError(f"--tower_module {name}: cannot import it ({error})") from error


def config_overrides(model_args: ModelArguments) -> dict:
    return check_config_overrides(parse_config_overrides(model_args.config_overrides), {"class_weights": (RAREST_X2,)})


def check_config(model_args: ModelArguments, demo: bool) -> None:
    """Build the config the run will build, from the towers' configs alone (no weights), so that an override the
    towers cannot take is refused before any tower loads, naming the override that fixes it. The class weights
    wait for the label set."""
    overrides = {key: value for key, value in config_overrides(model_args).items() if key != "class_weights"}
    try:
        if model_args.model_name_or_path:
            with user_errors(f"--model_name_or_path {model_args.model_name_or_path}", (OSError,)):
                AutoConfig.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir, **overrides)
            return
        if demo:
            text_config, vision_config = demo_towers()[:2]
        else:
            configs = []
            for flag in ("text_model_name_or_path", "vision_model_name_or_path"):
                with user_errors(f"--{flag} {getattr(model_args, flag)}", (OSError, ValueError)):
                    configs.append(AutoConfig.from_pretrained(getattr(model_args, flag), cache_dir=model_args.cache_dir))
            text_config, vision_config = configs
        SppSclConfig.from_text_vision_configs(text_config, vision_config, variant=model_args.variant, **overrides)
    except UserError:
        raise
    except ValueError as error:
        raise config_error(error) from error


def build_model_and_processor(model_args: ModelArguments, label_names: list[str], demo: bool, train_labels=None):
    """The model and its processor; `train_labels` (the training split's label ids) resolve a class-weight rule."""
    id2label = dict(enumerate(label_names))
    overrides = config_overrides(model_args)
    if "class_weights" in overrides:
        overrides["class_weights"] = resolve_class_weights(overrides["class_weights"], train_labels, len(label_names))
        logger.info("Class weights: %s", overrides["class_weights"])
    try:
        with user_errors(kinds=(OSError,)):
            return load_model_and_processor(model_args, id2label, demo, overrides)
    except UserError:
        raise
    except ValueError as error:
        if "SppSclConfig." in str(error):
            raise config_error(error) from error
        raise


def load_model_and_processor(model_args: ModelArguments, id2label: dict[int, str], demo: bool, overrides: dict):
    settings = {"variant": model_args.variant, "freeze_text_model": model_args.freeze_text_model,
                "freeze_vision_model": model_args.freeze_vision_model, **overrides}
    if model_args.model_name_or_path:
        model = AutoModel.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir, **overrides)
        processor = AutoProcessor.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
        if model.config.id2label != id2label:
            raise UserError(f"The checkpoint's labels {model.config.id2label} differ from the data's {id2label}: pass "
                            "--class_names in the checkpoint's order, or data with its labels")
        return model, processor
    if demo:
        text_config, vision_config, tokenizer, image_processor = demo_towers()
        config = SppSclConfig(text_config=text_config, vision_config=vision_config, id2label=id2label, **settings)
        model = SppSclModel(config)
        return model, SppSclProcessor.for_config(config, image_processor, tokenizer)
    model = SppSclModel.from_text_vision_pretrained(
        model_args.text_model_name_or_path, model_args.vision_model_name_or_path,
        text_cache_dir=model_args.cache_dir, vision_cache_dir=model_args.cache_dir, id2label=id2label, **settings,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_args.text_model_name_or_path, cache_dir=model_args.cache_dir)
    image_processor = AutoImageProcessor.from_pretrained(model_args.vision_model_name_or_path, cache_dir=model_args.cache_dir)
    return model, SppSclProcessor.for_config(model.config, image_processor, tokenizer)


def limit(dataset, count: int | None):
    return dataset if count is None or dataset is None else dataset.select(range(min(count, len(dataset))))


def prepare_splits(splits, data_args: DataArguments, model, processor, training_args, report: dict | None = None):
    """Limit the splits and, when the towers are frozen and caching is on, replace them by their cached features.
    The images whose pixels do not decode meet --missing_image here (counted in `report`), at their one decode:
    the vision tower's extraction, else a check before training."""
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples, "test": data_args.max_predict_samples}
    splits = {name: limit(splits[name], limits[name]) for name in limits if name in splits}
    report = report if report is not None else {"skipped": {}, "blanked": {}, "rows": {}}
    # A frozen tower's outputs are cached; a trainable one runs on raw inputs at every step (one-tower cache).
    towers = frozen_towers(model)
    use_cache = bool(towers) if data_args.cache_features is None else data_args.cache_features
    raw_inputs = ImageTextCollator(processor)
    if not use_cache or "vision" not in towers:
        splits = apply_pixel_problems(splits, data_args.missing_image, report)
    if not use_cache:
        return splits, raw_inputs
    if not towers:
        raise ValueError("--cache_features true needs a frozen tower (--freeze_text_model or --freeze_vision_model)")
    with training_args.main_process_first(desc="feature extraction"):
        cached, problems = extract_splits(splits, towers, data_args, model, processor, training_args, report)
    if "vision" in towers:
        cached = apply_pixel_problems(cached, data_args.missing_image, report, problems)
    if len(towers) == 1:
        return cached, CachedFeatureCollator(raw_inputs=raw_inputs)
    if not cache_on_device(data_args.feature_cache_on_device, list(cached.values()), training_args.device):
        return cached, CachedFeatureCollator()
    on_device = {name: DeviceFeatureCache(cache, training_args.device) for name, cache in cached.items()}
    logger.info("feature cache held on %s", training_args.device)
    if training_args.dataloader_num_workers:
        logger.warning("--dataloader_num_workers %d ignored: the batches of the feature cache held on %s are selected there, "
                       "by the training process", training_args.dataloader_num_workers, training_args.device)
    # Device tensors can be neither handed over by worker processes nor pinned.
    training_args.dataloader_num_workers, training_args.dataloader_pin_memory = 0, False
    training_args.dataloader_prefetch_factor, training_args.dataloader_persistent_workers = None, False
    return {name: cache.index_dataset() for name, cache in on_device.items()}, DeviceCacheCollator(list(on_device.values()))


def extract_splits(splits, towers: tuple[str, ...], data_args: DataArguments, model, processor, training_args, report: dict):
    """Each split's rows joined with the cached outputs of the frozen `towers`, and the images that did not decode
    (split -> row index -> problem). The vision tower runs first, over every split and alone: its extraction is each
    image's one decode, so an image whose pixels are truncated is named, and stops the run under --missing_image
    error, before any text-tower work; the text tower's pass then reuses the vision cache."""

    def extract(towers_now: tuple[str, ...]) -> dict:
        # On the device training will use (this process's accelerator), not wherever the model was loaded.
        return {name: extract_features(model, processor, dataset, cache_dir=data_args.feature_cache_dir, batch_size=training_args.per_device_eval_batch_size,
                                       storage_dtype=data_args.feature_cache_dtype, towers=towers_now, device=training_args.device,
                                       precision=data_args.feature_extraction_precision,
                                       num_workers=training_args.dataloader_num_workers or None, split=name)
                for name, dataset in splits.items()}

    if "vision" not in towers:
        return extract(towers), {}
    vision = extract(("vision",))
    problems = {name: {index: problem for index, problem in enumerate(cache["image_problem"]) if problem is not None}
                for name, cache in vision.items()}
    if data_args.missing_image == "error":
        apply_pixel_problems(vision, "error", report, problems)  # raises, naming the files
    action = "dropped (--missing_image skip)" if data_args.missing_image == "skip" else "kept with a blank image (--missing_image blank)"
    for name, found in problems.items():
        for index, problem in found.items():
            logger.warning("split %s, id %r: %s; %s", name, str(vision[name][index]["id"]), problem, action)
    return (vision if towers == ("vision",) else extract(towers)), problems


def cache_on_device(option: str, caches: list, device) -> bool:
    """--feature_cache_on_device: 'true', 'false', or 'auto' (when the features fit in accelerator memory)."""
    if option not in ("auto", "true", "false"):
        raise ValueError(f"--feature_cache_on_device must be 'auto', 'true' or 'false', got {option!r}")
    return option == "true" or (option == "auto" and fits_on_device(caches, device))


def resume_checkpoint(requested: str | None, output_dir: Path) -> str | bool | None:
    """`--resume_from_checkpoint PATH`, or for `--resume_from_checkpoint last` the Trainer's own `True`: the newest
    complete checkpoint in the output folder (one a killed run left half-written is set aside, see `checkpoints`)."""
    if requested != "last":
        return requested
    checkpoint = last_complete_checkpoint(output_dir) if output_dir.is_dir() else None
    if checkpoint is None:
        raise ValueError(f"--resume_from_checkpoint last: no complete checkpoint-N folder in {output_dir}; "
                         "train without --resume_from_checkpoint to start afresh")
    logger.info("Resuming from %s", checkpoint)
    return True


def set_up_logging(training_args: SppSclTrainingArguments) -> None:
    """`--log_level` governs our lines, the libraries' (transformers, datasets, accelerate, ...) and Python
    warnings. When passive (the default), the main process shows our progress at INFO and the libraries at their
    own level (WARNING, or $TRANSFORMERS_VERBOSITY), without their config dumps and builder lines; `--log_level info`
    shows those too. `--disable_tqdm` also turns off the progress bars of datasets (token counting), transformers
    (the Trainer's, and ours: feature extraction, image checks) and huggingface_hub (saving)."""
    libraries = training_args.get_process_log_level()
    ours = logging.INFO if training_args.log_level == "passive" and training_args.should_log else libraries
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=libraries, force=True)
    for name in (logger.name, "modeling_sppscl"):
        logging.getLogger(name).setLevel(ours)
    logging.captureWarnings(True)
    transformers.utils.logging.set_verbosity(libraries)
    datasets.utils.logging.set_verbosity(libraries)
    datasets.utils.logging.disable_propagation()  # datasets has its own handler: the root's would print each line again
    # As the Trainer's own bars: one process per machine shows them.
    if training_args.disable_tqdm or training_args.local_process_index != 0:
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
        huggingface_hub.utils.disable_progress_bars()


def launched_processes() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def run_cpu_processes_as_one_job() -> None:
    """`accelerate launch --multi_gpu --num_processes N` on a machine without an accelerator starts N processes that
    each train alone (world size 1, the same output folder); joined over gloo, they form one job, as on GPUs.
    Must run before the training arguments are built (they read ACCELERATE_USE_CPU when they set up devices)."""
    if launched_processes() > 1 and not torch.accelerator.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def check_and_log_world(training_args: SppSclTrainingArguments) -> None:
    if launched_processes() != training_args.world_size:
        raise ValueError(
            f"{launched_processes()} processes were launched but the training sees a world size of {training_args.world_size}: "
            "launch with `accelerate launch --multi_gpu --num_processes N` (or torchrun)"
        )
    per_device = training_args.per_device_train_batch_size
    logger.info(
        "%d process(es) (%s), per-device train batch %d, global train batch %d (x %d gradient accumulation steps)",
        training_args.world_size, training_args.distributed_state.distributed_type, per_device,
        per_device * training_args.world_size, training_args.gradient_accumulation_steps,
    )


def log_recipe(training_args: SppSclTrainingArguments) -> None:
    recipe = training_args.applied_recipe
    if not recipe:
        return
    applied = " ".join(f"--{name} {format_value(value)}" for name, value in recipe["values"].items())
    config = ",".join(f"{key}={format_value(value)}" for key, value in recipe["config"].items())
    logger.info("Recipe %r (%s), applied where the command line leaves it unset: %s%s", recipe["name"], recipe["source"],
                applied or "(every option set on the command line)", f" --config_overrides {config}" if config else "")


def towers_train(model) -> bool:
    return any(param.requires_grad for name, param in model.named_parameters() if name.startswith(TOWER_PREFIXES))


def checked_arguments(argv: list[str] | None = None):
    """`parse_arguments`, then every option checked (ranges, --config_overrides keys and types) before any work."""
    model_args, data_args, space_args, training_args, given = parse_arguments(argv)
    check_numbers(model_args, data_args, training_args)
    config_overrides(model_args)
    return model_args, data_args, space_args, training_args, given


def run() -> dict:
    """The run the command line asks for; its results (empty on processes other than the main one)."""
    run_cpu_processes_as_one_job()
    model_args, data_args, space_args, training_args, given = checked_arguments()
    demo = is_demo(data_args)
    set_up_logging(training_args)
    log_recipe(training_args)
    with user_errors(kinds=(ValueError,)):
        import_tower_module(model_args.tower_module)
    check_hub_access(space_args, training_args)
    with user_errors(kinds=(ValueError,)):
        check_and_log_world(training_args)
    set_seed(training_args.seed)
    with user_errors(kinds=(ValueError,)):
        check_output_dir(training_args.output_dir)
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples, "test": data_args.max_predict_samples}
    # The data first: a bad row or split is reported before any tower or tokenizer loads (and before a tower problem).
    with user_errors(kinds=(ValueError, OSError)):
        loaded = load_data(data_args, training_args.seed, model_args.model_name_or_path)
        check_splits(loaded, training_args, limits, data_args.strict_data)
    check_config(model_args, demo)
    train = loaded.splits.get("train")
    train_labels = None if train is None else limit(train, data_args.max_train_samples)["label"]
    model, processor = build_model_and_processor(model_args, loaded.label_names, demo, train_labels)
    if "ddp_find_unused_parameters" not in given and not towers_train(model):
        # Every head parameter reaches the loss (logits come from both embeddings); a trainable tower may hold some
        # that do not (BERT's pooler), so DDP keeps searching for them there.
        training_args.ddp_find_unused_parameters = False
    with user_errors(kinds=(ValueError,)):
        checked = check_before_training(loaded, model, processor, training_args, limits, data_args.empty_text,
                                        report_dir=training_args.output_dir if training_args.should_save else None,
                                        strict_data=data_args.strict_data)
    with user_errors(kinds=(ValueError,)):
        splits, collator = prepare_splits(checked, data_args, model, processor, training_args, loaded.report)
    if training_args.should_save:
        update_image_counts(training_args.output_dir, loaded.report)
    if data_args.head_num_threads:
        torch.set_num_threads(data_args.head_num_threads)
    trainer = SppSclTrainer(
        model=model,
        args=training_args,
        train_dataset=splits.get("train") if training_args.do_train else None,
        eval_dataset=splits.get("validation") if training_args.do_eval else None,
        data_collator=collator,
        processing_class=processor,
        compute_metrics=build_compute_metrics(model.config.id2label),
    )
    output_dir = Path(training_args.output_dir)
    results = {}
    if training_args.do_train:
        with user_errors(kinds=(ValueError,)):
            checkpoint = resume_checkpoint(training_args.resume_from_checkpoint, output_dir)
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results["train"] = train_result.metrics
    for split, prefix in (("validation", "eval"), ("test", "test")):
        wanted = training_args.do_eval if split == "validation" else training_args.do_predict
        if not wanted or split not in splits:
            continue
        prediction = trainer.predict(splits[split], metric_key_prefix=prefix)
        trainer.log_metrics(prefix, prediction.metrics)
        trainer.save_metrics(prefix, prediction.metrics)
        results[split] = prediction.metrics
        if trainer.is_world_process_zero():
            logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
            write_predictions(output_dir / f"predictions_{split}.csv", splits[split], logits, model.config.id2label)
    if trainer.is_world_process_zero():
        metrics = write_card(output_dir, trainer, results, model_args, data_args, space_args, demo)
        if space_args.write_space:
            write_model_space(output_dir, trainer, metrics, loaded.splits, data_args, demo)
        if data_args.plot:
            from modeling_sppscl.reporting.plots import write_plots

            write_plots(output_dir, trainer, splits)
    if training_args.sppscl_push_to_hub:
        trainer.push_to_hub(commit_message="SPP-SCL fine-tuned with run_sppscl.py")
        if space_args.push_space and trainer.is_world_process_zero():
            url = push_space(output_dir / "space", space_args.push_space, training_args.hub_token, training_args.hub_private_repo)
            logger.info("Space pushed: %s", url)
    return results if trainer.is_world_process_zero() else {}


def wants_traceback(argv: list[str]) -> bool:
    """`--log_level debug` on the command line (read from the words: the error may come before they are parsed)."""
    words = " ".join(argv).replace("-", "_").replace("=", " ").split()
    return any(word == "__log_level" and value == "debug" for word, value in zip(words, words[1:]))


def main() -> None:
    """`python run_sppscl.py` and `sppscl-train`: a user error (options, data, files, Hub access) ends with one
    `error:` message on stderr and exit status 1 (2 for the command line), its traceback only with
    `--log_level debug`; a bug keeps its traceback."""
    try:
        results = run()
    except UserError as error:
        if wants_traceback(sys.argv[1:]):
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    accuracy = results.get("validation", {}).get("eval_accuracy")
    if accuracy is not None and not math.isnan(accuracy):
        print(f"dev accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
