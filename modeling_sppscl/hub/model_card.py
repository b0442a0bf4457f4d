"""The model card (README.md) of a trained SPP-SCL model: Hub metadata with evaluation results, and the text, written
from the run's own objects (config, `trainer.args`, `trainer.state.log_history`, the final metrics), as a
Trainer-made card is.

Task on the Hub: the Hub's task list (https://huggingface.co/tasks, huggingface.js `pipelines.ts`) has no
image-text classification. `text-classification` and `image-classification` take one modality,
`zero-shot-image-classification` scores free candidate labels, `image-text-to-text` generates text (chat VLMs);
filed under any of them, the model page, its widget and API would call it with inputs it cannot take. The card
therefore says `pipeline_tag: other` (the Hub's task for models outside its list; it also keeps the Hub from
guessing a task from the config) with `inference: false` (the serverless widget runs no custom code), and points
to the model's Space (a Gradio app, see `space.py`). The evaluation results use the same task id, `other`, named
"Image-Text Classification".
"""

import importlib.metadata
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers.modelcard import extract_hyperparameters_from_trainer, parse_log_history

from ..configuration_sppscl import MIN_TRANSFORMERS_VERSION, SWITCHES


# Package data, so that an installed package (a wheel too) writes cards; model_cards/ links to it.
TEMPLATE_PATH = Path(__file__).resolve().parent / "model_card_template.md"
PIPELINE_TAG = "other"
RESULTS_TASK = PIPELINE_TAG
TASK_NAME = "Image-Text Classification"
# Result key -> (metric id on the Hub, display name, arguments of the metric).
HEADLINE_METRICS: dict[str, tuple[str, str, dict[str, str] | None]] = {
    "accuracy": ("accuracy", "Accuracy", None),
    "weighted_f1": ("f1", "Weighted F1", {"average": "weighted"}),
    "macro_f1": ("f1", "Macro F1", {"average": "macro"}),
}
# Trainer's timing entries say nothing about the model.
TIMING_KEYS = ("runtime", "samples_per_second", "steps_per_second")
CARD_TAG = "sppscl"
DEMO_TAG = "sppscl-demo"
# The per-epoch table's columns, as `transformers.modelcard.parse_log_history` names them.
EPOCH_COLUMNS = ("Epoch", "Step", "Training Loss", "Validation Loss", "Accuracy", "Weighted F1", "Macro F1")
FRAMEWORKS = ("sppscl", "transformers", "torch", "datasets", "tokenizers")
TOWERS = (("text", "Text tower"), ("vision", "Vision tower"))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "dataset"


def _is_hub_model_id(name: str) -> bool:
    if os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def eval_results_from_metrics(
    metrics: Mapping[str, Mapping[str, float]], dataset_name: str, dataset_id: str | None
) -> list[EvalResult]:
    """One `EvalResult` per split and headline metric (accuracy, weighted F1, macro F1)."""
    results = []
    for split, scores in metrics.items():
        missing = [key for key in HEADLINE_METRICS if key not in scores]
        if missing:
            raise ValueError(f"The {split!r} metrics lack {missing} (they have {sorted(scores)})")
        for key, (metric_type, metric_name, metric_args) in HEADLINE_METRICS.items():
            results.append(
                EvalResult(
                    task_type=RESULTS_TASK,
                    task_name=TASK_NAME,
                    dataset_type=dataset_id or _slug(dataset_name),
                    dataset_name=dataset_name,
                    dataset_split=split,
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_args=metric_args,
                    metric_value=float(scores[key]),
                )
            )
    return results


def _tags(config: Any, demo: bool) -> list[str]:
    labels = " ".join(str(label).lower() for label in config.id2label.values())
    task_tag = "sarcasm-detection" if "sarcas" in labels else "sentiment-analysis"
    tags = [CARD_TAG, f"sppscl-{config.variant}", "multimodal", "image-text-classification", task_tag, "contrastive-learning", "custom_code"]
    return tags + [DEMO_TAG] if demo else tags


def _result_rows(metrics: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    return [{"split": split, **{key: f"{float(scores[key]):.4f}" for key in HEADLINE_METRICS}} for split, scores in metrics.items()]


def _other_score_rows(metrics: Mapping[str, Mapping[str, float]]) -> list[dict[str, str]]:
    """Every further number (per-class scores, loss) of each split, for the card's detailed table."""
    skipped = set(HEADLINE_METRICS) | set(TIMING_KEYS)
    return [
        {"split": split, "name": name, "value": f"{float(value):.4f}"}
        for split, scores in metrics.items()
        for name, value in sorted(scores.items())
        if name not in skipped and isinstance(value, (int, float))
    ]


def _variant_facts(config: Any) -> dict[str, Any]:
    return {
        "variant": config.variant,
        "switches": {name: getattr(config, name) for name in SWITCHES},
        "batch_dependent": config.fusion_attention == "batch",
        "padding_dependent": config.text_pooling == "padded_mean",
        "text_max_length": config.text_max_length,
    }


def _tower_size(tower_config: Any) -> str:
    """The tower's size in words, from the config fields that the common text and vision towers have."""
    parts = []
    if getattr(tower_config, "num_hidden_layers", None):
        parts.append(f"{tower_config.num_hidden_layers} layers")
    if getattr(tower_config, "depths", None):
        parts.append(f"{len(tower_config.depths)} stages")
    if getattr(tower_config, "hidden_size", None):
        parts.append(f"hidden size {tower_config.hidden_size}")
    elif getattr(tower_config, "hidden_sizes", None):
        parts.append(f"{tower_config.hidden_sizes[-1]} output channels")
    return ", ".join(parts)


def _tower_rows(config: Any, sources: Mapping[str, str | None], trained: bool) -> list[dict[str, Any]]:
    """Per tower: where it came from (its name or path; random initialisation when neither) and what this run did
    with it."""
    rows = []
    for name, title in TOWERS:
        tower_config = getattr(config, f"{name}_config")
        source = sources.get(name) or getattr(tower_config, "_name_or_path", "") or None
        frozen = getattr(config, f"freeze_{name}_model")
        if not trained:
            state = "not trained in this run (the model was evaluated as loaded)"
        elif frozen:
            state = "frozen in this run (its weights were not updated; only the head was trained)" if source else (
                "frozen in this run: its random weights were never trained, so it gives fixed random features")
        else:
            state = "fine-tuned in this run, together with the head"
        rows.append({"title": title, "source": source, "on_hub": bool(source) and _is_hub_model_id(source), "model_type": tower_config.model_type,
                     "size": _tower_size(tower_config), "state": state})
    return rows


def _architecture_facts(config: Any) -> dict[str, Any]:
    return {
        "labels": [config.id2label[index] for index in sorted(config.id2label)],
        "num_text_layers": config.num_text_layers,
        "shared_dim": config.shared_dim,
    }


def training_hyperparameters(trainer: Any) -> dict[str, Any]:
    """The hyperparameters of a run, read from `trainer.args` and the model's config: what a Trainer-made card lists
    (`transformers.modelcard.extract_hyperparameters_from_trainer`) plus the SPP-SCL update, the tower learning
    rate and the loss weights. No entry is None: a setting the run did not use is left out or says so."""
    args, config = trainer.args, trainer.accelerator.unwrap_model(trainer.model).config
    rows = extract_hyperparameters_from_trainer(trainer)
    if not (config.freeze_text_model and config.freeze_vision_model):
        rows["tower_learning_rate"] = (f"{args.learning_rate} (same as the head)" if args.tower_learning_rate is None
                                       else args.tower_learning_rate)
    optimizer = getattr(args.optim, "value", args.optim)
    rows["optimizer"] = (f"{optimizer} with betas=({args.adam_beta1}, {args.adam_beta2}), epsilon={args.adam_epsilon}"
                         if "adam" in optimizer else optimizer) + (f", optimizer_args={args.optim_args}" if args.optim_args else "")
    rows["weight_decay"] = args.weight_decay
    if args.lr_scheduler_type == "halving":
        rows["lr_scheduler_type"] = f"halving: halved every {args.lr_halving_epochs} epochs (the paper's schedule)"
    rows["lr_scheduler_warmup_steps"] = args.warmup_steps if args.warmup_steps else "0 (no warm-up)"
    rows["max_grad_norm"] = args.max_grad_norm if args.max_grad_norm else "0 (no clipping)"
    if args.bf16:
        rows["mixed_precision_training"] = "bf16"
    rows["sppscl_update"] = {
        "two_step": "two_step (step 1: cross-entropy + intra-modal losses; step 2, when the gate allows: inter-modal loss)",
        "one_step": "one_step (one weighted sum of all the losses per batch)",
    }.get(args.sppscl_update, args.sppscl_update)
    for term in ("ce", "intra_text", "intra_image", "inter"):
        rows[f"{term}_loss_weight"] = getattr(config, f"{term}_loss_weight")
    rows["temperature"] = config.temperature
    rows["gate_ratio"] = round(config.gate_ratio, 4)
    if config.class_weights is not None:
        rows["class_weights"] = ", ".join(str(weight) for weight in config.class_weights)
    if args.world_size > 1:
        rows["contrastive_over_global_batch"] = args.contrastive_over_global_batch
    if args.load_best_model_at_end:
        rows["load_best_model_at_end"] = f"True (the best evaluation by {args.metric_for_best_model} is the final model)"
    recipe = getattr(args, "applied_recipe", None)
    if recipe:
        rows["recipe"] = f"{recipe['name']}: {recipe['source']}; its values fill what the command line left unset"
    return {name: value for name, value in rows.items() if value is not None}


def epoch_results(log_history: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One row per evaluation during training (as `transformers.modelcard.parse_log_history` reads them), with the
    epoch, step, losses and headline scores; empty when the run did not train."""
    _, lines, _ = parse_log_history(list(log_history))
    return [{column: _cell(column, line[column]) for column in EPOCH_COLUMNS if column in line} for line in lines or []]


def _cell(column: str, value: Any) -> str:
    """Scores and losses with four decimals, as in *Results*; the epoch as logged (rounded), steps and text as they are."""
    if not isinstance(value, float):
        return str(value)
    return str(round(value, 4)) if column == "Epoch" else f"{value:.4f}"


def framework_versions() -> dict[str, str]:
    """The installed versions of the packages that made the model (those installed)."""
    versions = {}
    for name in FRAMEWORKS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def build_model_card(
    config: Any,
    metrics: Mapping[str, Mapping[str, float]],
    hyperparameters: Mapping[str, Any],
    base_models: Sequence[str],
    dataset_name: str,
    dataset_id: str | None = None,
    license: str = "apache-2.0",
    *,
    model_name: str | None = None,
    repo_id: str | None = None,
    space_id: str | None = None,
    demo: bool = False,
    data_source: str | None = None,
    tower_sources: Mapping[str, str | None] | None = None,
    epochs: Sequence[Mapping[str, str]] = (),
    template_path: str | Path = TEMPLATE_PATH,
) -> ModelCard:
    """The card of a trained model.

    Args:
        config: the model's `SppSclConfig`.
        metrics: per split (`"validation"`, `"test"`, ...), the final scores without prefix (what the run's
            `*_results.json` hold); `accuracy`, `weighted_f1` and `macro_f1` become the card's evaluation results, the
            other numbers go to a detailed table.
        hyperparameters: the run's training hyperparameters (`training_hyperparameters(trainer)`); empty when the
            run did not train. Entries that are None are left out.
        base_models: where the towers (or the whole model) came from; Hub ids become `base_model`, local paths are
            only named in the text.
        dataset_name, dataset_id: the dataset's display name and, when it is on the Hub, its id.
        license: the license identifier of the card metadata.
        model_name: name of the model in the card and its evaluation results (default from variant and dataset).
        repo_id: the Hub repository (or local folder) the usage examples load (default: a placeholder path).
        space_id: the model's Space on the Hub, linked from the card.
        demo: the model of `run_sppscl.py`'s built-in demo (synthetic data, tiny random towers): the card says so.
        data_source: how the data was given, in words (default: the dataset's name).
        tower_sources: `{"text": ..., "vision": ...}`, each tower's name or path (default: the towers' configs'
            `_name_or_path`; a tower with neither was randomly initialised).
        epochs: per-epoch evaluation rows (`epoch_results(trainer.state.log_history)`).
    """
    model_name = model_name or f"sppscl-{config.variant}-{_slug(dataset_name)}"
    hub_bases = [name for name in base_models if _is_hub_model_id(name)]
    card_data = ModelCardData(
        model_name=model_name,
        base_model=hub_bases or None,
        base_model_relation="finetune" if hub_bases else None,
        datasets=[dataset_id] if dataset_id else None,
        eval_results=eval_results_from_metrics(metrics, dataset_name, dataset_id),
        library_name="transformers",
        license=license,
        pipeline_tag=PIPELINE_TAG,
        tags=_tags(config, demo),
        inference=False,
    )
    trained = bool(hyperparameters)
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        repo_id=repo_id,
        space_id=space_id,
        demo=demo,
        min_transformers_version=MIN_TRANSFORMERS_VERSION,
        dataset_name=dataset_name,
        dataset_id=dataset_id,
        data_source=data_source or dataset_name,
        hub_bases=hub_bases,
        local_bases=[name for name in base_models if name not in hub_bases],
        towers=_tower_rows(config, tower_sources or {}, trained),
        trained=trained,
        results=_result_rows(metrics),
        other_scores=_other_score_rows(metrics),
        hyperparameters=[(str(key), str(value)) for key, value in hyperparameters.items() if value is not None],
        epochs=list(epochs),
        epoch_columns=[column for column in EPOCH_COLUMNS if any(column in row for row in epochs)],
        framework_versions=framework_versions(),
        **_variant_facts(config),
        **_architecture_facts(config),
    )


def write_model_card(folder: str | Path, *args: Any, **kwargs: Any) -> Path:
    """Write the card of `build_model_card(*args, **kwargs)` as `folder/README.md` and return its path."""
    path = Path(folder) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    build_model_card(*args, **kwargs).save(path)
    return path


def is_sppscl_card(path: str | Path) -> bool:
    """Whether `path` is a card written by `write_model_card`."""
    path = Path(path)
    return path.is_file() and CARD_TAG in (ModelCard.load(path).data.tags or [])


__all__ = [
    "build_model_card",
    "epoch_results",
    "eval_results_from_metrics",
    "framework_versions",
    "is_sppscl_card",
    "training_hyperparameters",
    "write_model_card",
]
