#!/usr/bin/env python
"""Fine-tune, evaluate and predict with SPP-SCL on an image-text classification dataset.

    python run_sppscl.py                      # the built-in demo (synthetic data, tiny towers, ~2 minutes on CPU)
    python run_sppscl.py --data_dir ../shared/data/mvsa_single \
        --text_model_name_or_path google-bert/bert-base-uncased --vision_model_name_or_path microsoft/resnet-50 \
        --variant paper --output_dir outputs/mvsa_single --do_train --do_eval --num_train_epochs 150 ...

The same command runs under `accelerate launch` (one or several processes). Every `TrainingArguments` option works
(`--push_to_hub`, `--resume_from_checkpoint`, ...), plus the SPP-SCL ones of `SppSclTrainingArguments`.
"""

import csv
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoImageProcessor, AutoModel, AutoProcessor, AutoTokenizer, HfArgumentParser, set_seed
from transformers.trainer_utils import get_last_checkpoint

from modeling_sppscl import SppSclConfig, SppSclModel, SppSclProcessor
from modeling_sppscl.data.collators import ImageTextCollator
from modeling_sppscl.data.demo import build_demo_tokenizer, load_demo_data
from modeling_sppscl.data.feature_cache import CachedFeatureCollator, extract_features
from modeling_sppscl.data.readers import load_clmlf_folder, load_csv_or_jsonl, load_datasets_dataset, load_hfm_text_files
from modeling_sppscl.hub.model_card import write_model_card
from modeling_sppscl.reporting.metrics import build_compute_metrics
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments


logger = logging.getLogger(__name__)

DEMO_OUTPUT_DIR = "outputs/demo"
DEMO_ARGS = [
    "--output_dir", DEMO_OUTPUT_DIR,
    "--do_train", "--do_eval", "--do_predict",
    "--num_train_epochs", "8", "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64",
    "--learning_rate", "3e-3", "--eval_strategy", "epoch", "--save_strategy", "epoch", "--save_total_limit", "1",
    "--load_best_model_at_end", "--logging_strategy", "epoch", "--report_to", "none", "--seed", "0",
]


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "An SPP-SCL checkpoint (folder or Hub id)."})
    text_model_name_or_path: str | None = field(default=None, metadata={"help": "Pretrained text tower (with its tokenizer)."})
    vision_model_name_or_path: str | None = field(default=None, metadata={"help": "Pretrained vision tower (with its image processor)."})
    variant: str = field(default="default", metadata={"help": "'paper' (the authors' code, number for number) or 'default'."})
    config_overrides: str | None = field(
        default=None, metadata={"help": "Comma-separated SppSclConfig overrides, e.g. 'dropout=0.1,temperature=0.1'."}
    )
    freeze_text_model: bool = field(default=True, metadata={"help": "Keep the text tower frozen."})
    freeze_vision_model: bool = field(default=True, metadata={"help": "Keep the vision tower frozen."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded towers are stored."})


@dataclass
class DataArguments:
    data_dir: str | None = field(default=None, metadata={"help": "A folder in CLMLF's layout (train/dev|valid/test.json + images/)."})
    hfm_text_dir: str | None = field(default=None, metadata={"help": "A folder with HFM's original train.txt/valid.txt/test.txt."})
    dataset_name: str | None = field(default=None, metadata={"help": "A `datasets` dataset: Hub id or save_to_disk folder."})
    train_file: str | None = field(default=None, metadata={"help": "CSV or JSON Lines with image, text and label columns."})
    validation_file: str | None = field(default=None, metadata={"help": "CSV or JSON Lines for model selection."})
    test_file: str | None = field(default=None, metadata={"help": "CSV or JSON Lines for predictions."})
    image_dir: str | None = field(default=None, metadata={"help": "Image folder for --hfm_text_dir."})
    image_column: str = field(default="image")
    text_column: str = field(default="text")
    label_column: str = field(default="label")
    class_names: str | None = field(default=None, metadata={"help": "Comma-separated class names, in label-id order."})
    missing_image: str = field(default="error", metadata={"help": "A missing or corrupt image: 'error', 'skip' the pair, or 'blank' image."})
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    max_predict_samples: int | None = field(default=None)
    cache_features: bool | None = field(
        default=None, metadata={"help": "Train the head from cached tower outputs (default: on when both towers are frozen)."}
    )
    feature_cache_dir: str | None = field(default=None, metadata={"help": "Feature cache folder (default: <output_dir>/feature_cache)."})
    feature_cache_dtype: str = field(default="float32", metadata={"help": "'float32' or 'float16' storage of cached features."})
    plot: bool = field(default=False, metadata={"help": "Write t-SNE, confusion-matrix and training-curve PNGs."})
    head_num_threads: int | None = field(
        default=None,
        metadata={"help": "CPU threads for training the head after feature extraction (1 was several times faster "
                  "for the paper's BiLSTM on a busy 2-core machine; see docs/PERFORMANCE.md)."},
    )


# Recipes chosen by cross-validation (docs/RESULTS.md, experiments/cv.py): `--preset NAME` puts these flags before
# the command line's own, so a flag given explicitly still wins (a given --config_overrides replaces the preset's).
PRESETS: dict[str, list[str]] = {
    # experiments/cv_recipes.py CANDIDATE: frozen small towers (MiniLM + EfficientNet-Lite0) on MVSA-Single.
    "small_towers_cv": [
        "--sppscl_update", "one_step", "--num_train_epochs", "6", "--learning_rate", "1e-3",
        "--lr_scheduler_type", "linear", "--weight_decay", "1e-6",
        "--per_device_train_batch_size", "64", "--per_device_eval_batch_size", "64",
        "--config_overrides", "dropout=0.2,temperature=0.07,ce_loss_weight=1,intra_text_loss_weight=0.2,"
        "intra_image_loss_weight=0.2,inter_loss_weight=0.2,class_weights=[1,2,1]",
    ],
}


def expand_preset(argv: list[str]) -> list[str]:
    if "--preset" not in argv:
        return argv
    index = argv.index("--preset")
    name = argv[index + 1] if index + 1 < len(argv) else None
    if name not in PRESETS:
        raise ValueError(f"--preset must be followed by one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name] + argv[:index] + argv[index + 2 :]


def parse_arguments() -> tuple[ModelArguments, DataArguments, SppSclTrainingArguments]:
    parser = HfArgumentParser((ModelArguments, DataArguments, SppSclTrainingArguments))
    argv = expand_preset(sys.argv[1:]) or DEMO_ARGS
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=str(Path(argv[0]).resolve()))
    return parser.parse_args_into_dataclasses(args=argv)


def is_demo(data_args: DataArguments) -> bool:
    return not any([data_args.data_dir, data_args.hfm_text_dir, data_args.dataset_name, data_args.train_file,
                    data_args.validation_file, data_args.test_file])


def load_data(data_args: DataArguments, seed: int):
    """The splits (`train`, `validation`, `test`) with columns id, text, image, label, and the label names."""
    names = data_args.class_names.split(",") if data_args.class_names else None
    common = {"label_names": names, "missing_image": data_args.missing_image}
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


def parse_config_overrides(text: str | None) -> dict:
    overrides = {}
    # Commas inside brackets belong to a list value (class_weights=[1,2,1]).
    for item in filter(None, re.split(r",(?![^\[]*\])", text or "")):
        if "=" not in item:
            raise ValueError(f"--config_overrides: expected name=value, got {item!r}")
        name, value = item.split("=", 1)
        try:
            overrides[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name.strip()] = value
    return overrides


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


def build_model_and_processor(model_args: ModelArguments, label_names: list[str], demo: bool):
    id2label = dict(enumerate(label_names))
    overrides = parse_config_overrides(model_args.config_overrides)
    settings = {"variant": model_args.variant, "freeze_text_model": model_args.freeze_text_model,
                "freeze_vision_model": model_args.freeze_vision_model, **overrides}
    if model_args.model_name_or_path:
        model = AutoModel.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir, **overrides)
        processor = AutoProcessor.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
        if model.config.id2label != id2label:
            raise ValueError(f"The checkpoint's labels {model.config.id2label} differ from the data's {id2label}")
        return model, processor
    if demo and not (model_args.text_model_name_or_path or model_args.vision_model_name_or_path):
        text_config, vision_config, tokenizer, image_processor = demo_towers()
        config = SppSclConfig(text_config=text_config, vision_config=vision_config, id2label=id2label, **settings)
        model = SppSclModel(config)
        return model, SppSclProcessor.for_config(config, image_processor, tokenizer)
    if not (model_args.text_model_name_or_path and model_args.vision_model_name_or_path):
        raise ValueError("Pass --model_name_or_path, or both --text_model_name_or_path and --vision_model_name_or_path")
    model = SppSclModel.from_text_vision_pretrained(
        model_args.text_model_name_or_path, model_args.vision_model_name_or_path,
        text_cache_dir=model_args.cache_dir, vision_cache_dir=model_args.cache_dir, id2label=id2label, **settings,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_args.text_model_name_or_path, cache_dir=model_args.cache_dir)
    image_processor = AutoImageProcessor.from_pretrained(model_args.vision_model_name_or_path, cache_dir=model_args.cache_dir)
    return model, SppSclProcessor.for_config(model.config, image_processor, tokenizer)


def limit(dataset, count: int | None):
    return dataset if count is None or dataset is None else dataset.select(range(min(count, len(dataset))))


def prepare_splits(splits, data_args: DataArguments, model, processor, training_args):
    """Limit the splits and, when the towers are frozen and caching is on, replace them by their cached features."""
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples, "test": data_args.max_predict_samples}
    splits = {name: limit(splits[name], limits[name]) for name in limits if name in splits}
    frozen = model.config.freeze_text_model and model.config.freeze_vision_model
    use_cache = frozen if data_args.cache_features is None else data_args.cache_features
    if not use_cache:
        return splits, ImageTextCollator(processor)
    cache_dir = data_args.feature_cache_dir or str(Path(training_args.output_dir) / "feature_cache")
    with training_args.main_process_first(desc="feature extraction"):
        cached = {
            name: extract_features(model, processor, dataset, cache_dir=cache_dir, batch_size=training_args.per_device_eval_batch_size,
                                   storage_dtype=data_args.feature_cache_dtype)
            for name, dataset in splits.items()
        }
    return cached, CachedFeatureCollator()


def resume_checkpoint(requested: str | None, output_dir: Path) -> str | None:
    """`--resume_from_checkpoint PATH`, or `--resume_from_checkpoint last` for the newest in the output folder."""
    if requested != "last":
        return requested
    checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if checkpoint is None:
        raise ValueError(f"--resume_from_checkpoint last: no checkpoint in {output_dir}")
    return checkpoint


def write_predictions(path: Path, dataset, logits: np.ndarray, id2label: dict[int, str]) -> None:
    probabilities = torch.softmax(torch.from_numpy(logits).float(), dim=-1).numpy()
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "prediction", *[f"prob_{id2label[i]}" for i in range(len(id2label))]])
        for row_id, label, probs in zip(dataset["id"], dataset["label"], probabilities):
            writer.writerow([row_id, id2label[int(label)], id2label[int(probs.argmax())], *[f"{p:.6f}" for p in probs]])


def main() -> dict:
    model_args, data_args, training_args = parse_arguments()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO if training_args.should_log else logging.WARN)
    set_seed(training_args.seed)
    demo = is_demo(data_args)
    loaded = load_data(data_args, training_args.seed)
    model, processor = build_model_and_processor(model_args, loaded.label_names, demo)
    splits, collator = prepare_splits(loaded.splits, data_args, model, processor, training_args)
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
        train_result = trainer.train(resume_from_checkpoint=resume_checkpoint(training_args.resume_from_checkpoint, output_dir))
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
        write_card(output_dir, model, results, model_args, data_args, training_args, demo)
        if data_args.plot:
            from modeling_sppscl.reporting.plots import write_plots

            write_plots(output_dir, trainer, splits)
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="SPP-SCL fine-tuned with run_sppscl.py")
    return results


def write_card(output_dir: Path, model, results: dict, model_args, data_args, training_args, demo: bool) -> None:
    split_metrics = {}
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split in results:
            metrics = results[split]
            split_metrics[split] = {key[len(prefix) + 1 :]: value for key, value in metrics.items() if key.startswith(prefix + "_")}
    base_models = [name for name in (model_args.model_name_or_path, model_args.text_model_name_or_path, model_args.vision_model_name_or_path) if name]
    dataset_name = "synthetic demo set" if demo else (data_args.dataset_name or data_args.data_dir or data_args.hfm_text_dir or data_args.train_file)
    summary = {
        "variant": model.config.variant,
        "update": training_args.sppscl_update,
        "epochs": training_args.num_train_epochs,
        "batch_size": training_args.per_device_train_batch_size * max(1, training_args.world_size),
        "learning_rate": training_args.learning_rate,
        "lr_halving_epochs": training_args.lr_halving_epochs,
        "seed": training_args.seed,
    }
    write_model_card(output_dir, model.config, split_metrics, summary, base_models, str(dataset_name), data_args.dataset_name)


if __name__ == "__main__":
    metrics = main()
    accuracy = metrics.get("validation", {}).get("eval_accuracy")
    if accuracy is not None and not math.isnan(accuracy):
        print(f"dev accuracy: {accuracy:.4f}")
