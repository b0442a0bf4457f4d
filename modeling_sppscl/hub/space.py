"""A Hugging Face Space for a trained SPP-SCL model: a Gradio app (image + text in, a probability per class out,
example inputs, the card's metrics), its Space metadata (`README.md`) and requirements, written into a folder
that `push_space` (or `HfApi().upload_folder(..., repo_type="space")`) publishes.

The app (`space_app/app.py`, package data) loads the model as remote code from its Hub repository, or from a
local folder for trying it out (`SPPSCL_MODEL=path/to/model python app.py`).
"""

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, SpaceCard, SpaceCardData

from ..configuration_sppscl import MIN_TRANSFORMERS_VERSION
from ..processing_sppscl import load_image
from .model_card import HEADLINE_METRICS


APP_SOURCE = Path(__file__).resolve().parent / "space_app" / "app.py"
# The Gradio release the app was tested with (the Space builds with it; `pip install sppscl[space]` gets it too).
GRADIO_VERSION = "6.31.0"
REQUIREMENTS = (f"transformers>={MIN_TRANSFORMERS_VERSION}", "torch", "pillow", "numpy", "packaging")
SETTINGS_FILE = "space_config.json"


def metrics_markdown(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """The card's headline results as a Markdown table (empty when there are none)."""
    if not metrics:
        return ""
    names = [display for _, display, _ in HEADLINE_METRICS.values()]
    rows = [f"| {split} | " + " | ".join(f"{float(scores[key]):.4f}" for key in HEADLINE_METRICS) + " |" for split, scores in metrics.items()]
    return "\n".join(["### Results", "", "| Split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|", *rows])


def write_space(
    space_dir: str | Path,
    model: str,
    labels: Sequence[str],
    title: str,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    examples: Sequence[tuple[Any, str]] = (),
    license: str = "apache-2.0",
    about: str = "",
) -> Path:
    """Write the Space into `space_dir` and return it.

    Args:
        model: the model's Hub id, or its local folder (stored relative to `space_dir`, for a local run).
        labels: the class names, in label-id order.
        title: the Space's title.
        metrics: per split, the scores shown under the app (`accuracy`, `weighted_f1`, `macro_f1`).
        examples: (image, text) pairs offered as examples; images as `load_image` takes them (path, PIL, array).
        about: what the model is (its training data; for a demo, that it is one), shown after the description.
    """
    space_dir = Path(space_dir)
    (space_dir / "examples").mkdir(parents=True, exist_ok=True)
    on_hub = not Path(model).is_dir()
    shown = model if on_hub else Path(model).resolve().name
    if not on_hub:
        model = os.path.relpath(Path(model).resolve(), space_dir.resolve())
    example_rows = []
    for index, (image, text) in enumerate(examples):
        name = f"examples/example_{index}.png"
        load_image(image, name=f"example {index}").save(space_dir / name)
        example_rows.append([name, text])
    settings = {
        "model": model,
        "labels": list(labels),
        "title": title,
        "description": "Upload an image, type the text that goes with it, and see the probability of each class "
        f"({', '.join(labels)}). Model: `{shown}` (SPP-SCL, loaded with `trust_remote_code=True`)."
        + (f" {about}" if about else ""),
        "metrics_markdown": metrics_markdown(metrics or {}),
        "examples": example_rows,
    }
    (space_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    shutil.copyfile(APP_SOURCE, space_dir / "app.py")
    (space_dir / "requirements.txt").write_text("\n".join(REQUIREMENTS) + "\n")
    card_data = SpaceCardData(
        title=title[:60], sdk="gradio", sdk_version=GRADIO_VERSION, app_file="app.py", license=license,
        models=[model] if on_hub else None, tags=["sppscl", "image-text-classification"],
        short_description="Image-text classification with SPP-SCL",
    )
    body = f"# {title}\n\n{settings['description']}\n\n{settings['metrics_markdown']}\n"
    SpaceCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}").save(space_dir / "README.md")
    return space_dir


def push_space(space_dir: str | Path, repo_id: str, token: str | None = None, private: bool | None = None) -> str:
    """Create (or reuse) the Space `repo_id` and upload `space_dir` to it; returns the commit URL."""
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    return api.upload_folder(folder_path=str(space_dir), repo_id=repo_id, repo_type="space",
                             commit_message="SPP-SCL demo Space").commit_url
