"""The model card (README.md) of a trained SPP-SCL model: Hub metadata with evaluation results, and the text.

The Hub has no image-text classification task, and its serverless widget runs no custom code, so the card declares
no `pipeline_tag` and `inference: false` (no widget that would fail); the card points to the model's Space (a
Gradio app, see `space.py`) instead. The evaluation results keep the closest Hub task, `text-classification`, so
that they show on the model page.
"""

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..configuration_sppscl import MIN_TRANSFORMERS_VERSION, SWITCHES


# Package data, so that an installed package (a wheel too) writes cards; model_cards/ links to it.
TEMPLATE_PATH = Path(__file__).resolve().parent / "model_card_template.md"
RESULTS_TASK = "text-classification"
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


def _tags(config: Any) -> list[str]:
    labels = " ".join(str(label).lower() for label in config.id2label.values())
    task_tag = "sarcasm-detection" if "sarcas" in labels else "sentiment-analysis"
    return [CARD_TAG, f"sppscl-{config.variant}", "multimodal", "image-text-classification", task_tag, "contrastive-learning", "custom_code"]


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


def _architecture_facts(config: Any) -> dict[str, Any]:
    return {
        "labels": [config.id2label[index] for index in sorted(config.id2label)],
        "text_tower": config.text_config.model_type,
        "vision_tower": config.vision_config.model_type,
        "num_text_layers": config.num_text_layers,
        "shared_dim": config.shared_dim,
        "frozen_towers": [
            name for name, frozen in (("text", config.freeze_text_model), ("vision", config.freeze_vision_model)) if frozen
        ],
    }


def build_model_card(
    config: Any,
    metrics: Mapping[str, Mapping[str, float]],
    training_summary: Mapping[str, Any],
    base_models: Sequence[str],
    dataset_name: str,
    dataset_id: str | None = None,
    license: str = "apache-2.0",
    *,
    model_name: str | None = None,
    repo_id: str | None = None,
    space_id: str | None = None,
    template_path: str | Path = TEMPLATE_PATH,
) -> ModelCard:
    """The card of a trained model.

    Args:
        config: the model's `SppSclConfig`.
        metrics: per split (`"validation"`, `"test"`, ...), the scores without prefix; `accuracy`, `weighted_f1` and
            `macro_f1` become the card's evaluation results, the other numbers go to a detailed table.
        training_summary: training settings shown as a table (epochs, batch size, learning rate, ...).
        base_models: where the towers (or the whole model) came from; Hub ids become `base_model`, local paths are
            only named in the text.
        dataset_name, dataset_id: the dataset's display name and, when it is on the Hub, its id.
        license: the license identifier of the card metadata.
        model_name: name of the model in the card and its evaluation results (default from variant and dataset).
        repo_id: the Hub repository (or local folder) the usage examples load (default: a placeholder path).
        space_id: the model's Space on the Hub, linked from the card.
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
        tags=_tags(config),
        inference=False,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        repo_id=repo_id,
        space_id=space_id,
        min_transformers_version=MIN_TRANSFORMERS_VERSION,
        dataset_name=dataset_name,
        dataset_id=dataset_id,
        hub_bases=hub_bases,
        local_bases=[name for name in base_models if name not in hub_bases],
        results=_result_rows(metrics),
        other_scores=_other_score_rows(metrics),
        training=[(str(key), str(value)) for key, value in training_summary.items()],
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
    "eval_results_from_metrics",
    "is_sppscl_card",
    "write_model_card",
]
