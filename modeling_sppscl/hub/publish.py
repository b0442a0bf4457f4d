"""What `run_sppscl.py` publishes for a trained model: the Hub access check made before any work, the model card
and the Space. The argument objects are run_sppscl's dataclasses."""

import os
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from huggingface_hub import HfApi

from ..data.demo import (
    CARRIERS, DEMO_IMAGE_SIZE, DEMO_LABEL_NAMES, IMAGE_CLASS_COLOURS, NEUTRAL_WORDS, TEXT_CLASS_WORDS, demo_image, demo_text,
)
from .model_card import epoch_results, training_hyperparameters, write_model_card
from .space import write_space


class HubAccessError(SystemExit):
    """The Hub cannot be used as asked: exits with one line that says why and what to check (no traceback)."""


def _one_line(error: Exception) -> str:
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def check_hub_repo(repo_id: str, option: str, token: str | None = None, private: bool | None = None, repo_type: str = "model") -> str:
    """Check the token and create (or reuse) `repo_id`; return its full id (`user/name` for a bare name).

    Called before any data loading, extraction or training, so that an offline machine, a missing or read-only
    token, or a namespace one may not write to stops the run at once, in one line naming `option`.
    """
    api = HfApi(token=token)
    try:
        user = api.whoami()["name"]
        full_id = repo_id if "/" in repo_id else f"{user}/{repo_id}"
        extra = {"space_sdk": "gradio"} if repo_type == "space" else {}
        return api.create_repo(full_id, repo_type=repo_type, private=private, exist_ok=True, **extra).repo_id
    # Whatever the cause (no network, offline mode, no token, no write access, a proxy), the answer is the same:
    # stop now, before hours of work, with the reason.
    except Exception as error:
        raise HubAccessError(
            f"{option} {repo_id}: the Hub cannot be used ({_one_line(error)}). Check the network, the token "
            "(`hf auth login` or --hub_token) and your write access to that namespace; or run without it."
        ) from None


def check_hub_access(space_args, training_args) -> None:
    """Before any work: the token and the repositories of --push_to_hub / --push_space (one-line error if unusable);
    `hub_model_id` becomes the full repository id, which the card's snippets and the Space load."""
    if space_args.push_space and not training_args.sppscl_push_to_hub:
        raise HubAccessError("--push_space needs --push_to_hub: the Space loads the model from its Hub repository")
    if not training_args.sppscl_push_to_hub or not training_args.should_save:
        return
    requested = training_args.hub_model_id or Path(training_args.output_dir).absolute().name
    token, private = training_args.hub_token, training_args.hub_private_repo
    training_args.hub_model_id = check_hub_repo(requested, "--push_to_hub", token, private)
    if space_args.push_space:
        space_args.push_space = check_hub_repo(space_args.push_space, "--push_space", token, private, repo_type="space")


def write_card(output_dir: Path, trainer, results: dict, model_args, data_args, space_args, demo: bool) -> dict:
    """Write the model card from the run's own objects (config, `trainer.args`, `trainer.state.log_history`, the
    final metrics that `*_results.json` hold); return the per-split metrics it shows."""
    split_metrics = {}
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split in results:
            metrics = results[split]
            split_metrics[split] = {key[len(prefix) + 1 :]: value for key, value in metrics.items() if key.startswith(prefix + "_")}
    training_args, config = trainer.args, trainer.accelerator.unwrap_model(trainer.model).config
    base_models = [name for name in (model_args.model_name_or_path, model_args.text_model_name_or_path, model_args.vision_model_name_or_path) if name]
    trained = "train" in results
    # The snippets load what a reader has: the Hub repository when pushed, else this folder.
    repo_id = training_args.hub_model_id if training_args.sppscl_push_to_hub else str(output_dir)
    dataset_id = data_args.dataset_name if data_args.dataset_name and not os.path.exists(data_args.dataset_name) else None
    write_model_card(
        output_dir, config, split_metrics, training_hyperparameters(trainer) if trained else {}, base_models,
        dataset_display_name(data_args, demo), dataset_id, repo_id=repo_id, space_id=space_args.push_space, demo=demo,
        data_source=data_source(data_args, demo),
        tower_sources={"text": model_args.text_model_name_or_path, "vision": model_args.vision_model_name_or_path},
        epochs=epoch_results(trainer.state.log_history) if trained else (),
    )
    return split_metrics


# The data flags, in the order `run_sppscl.load_data` reads them, with what each names.
DATA_SOURCES = (
    ("dataset_name", "the `datasets` dataset"),
    ("data_dir", "the CLMLF-layout folder"),
    ("hfm_text_dir", "HFM's text files in"),
    ("train_file", "the file"),
    ("validation_file", "the file"),
    ("test_file", "the file"),
)


def _data_flag(data_args) -> tuple[str, str, str]:
    return next((flag, what, getattr(data_args, flag)) for flag, what in DATA_SOURCES if getattr(data_args, flag))


def dataset_display_name(data_args, demo: bool) -> str:
    """The data's name: a Hub id as given, a local folder or file by its own name (not the path on this machine)."""
    if demo:
        return "synthetic demo set"
    flag, _, value = _data_flag(data_args)
    return value if flag == "dataset_name" and not os.path.exists(value) else Path(value).name


def data_source(data_args, demo: bool) -> str:
    """The data in words, for the card: which set, and how the run read it."""
    if demo:
        return "the synthetic demo set that `run_sppscl.py` generates (its built-in demo)"
    flag, what, _ = _data_flag(data_args)
    return f"{what} `{dataset_display_name(data_args, demo)}` (read with `--{flag}`)"


def write_model_space(output_dir: Path, trainer, metrics: dict, raw_splits: dict, data_args, demo: bool) -> None:
    """The Space for this model in output_dir/space. Its page names the model and, for the demo, says what the demo
    model is and how its labels are carried; the examples are pairs of the demo's own generator that the model
    classifies right, or else up to three pairs of the evaluation data."""
    model, processor, training_args = trainer.accelerator.unwrap_model(trainer.model), trainer.processing_class, trainer.args
    labels = [model.config.id2label[index] for index in sorted(model.config.id2label)]
    location = training_args.hub_model_id if training_args.sppscl_push_to_hub else str(output_dir)
    if demo:
        title, about, examples = f"SPP-SCL demo: {Path(location).name}", demo_space_note(), demo_examples(model, processor)
    else:
        source = raw_splits.get("validation") or raw_splits.get("test") or raw_splits.get("train")
        rows = [] if source is None else [row for row in source.select(range(min(len(source), 8))) if row["image"] is not None][:3]
        title, about = f"SPP-SCL: {Path(location).name}", f"Trained on {data_source(data_args, demo)}."
        examples = [(row["image"], row["text"]) for row in rows]
    write_space(output_dir / "space", location, labels, title, metrics, examples=examples, about=about)


def demo_space_note() -> str:
    """What the demo model is and how its labels are carried, from the demo generator's own constants."""
    channels = ("red", "green", "blue")
    words = "; ".join(f"{' or '.join(cue)}: {label}" for cue, label in zip(TEXT_CLASS_WORDS, DEMO_LABEL_NAMES))
    colours = ", ".join(f"{channels[int(np.argmax(colour))]}: {label}" for colour, label in zip(IMAGE_CLASS_COLOURS, DEMO_LABEL_NAMES))
    return (
        "This is the built-in demo model of `run_sppscl.py`: tiny randomly initialised towers and a head trained on "
        "synthetic pairs, not a model for real posts. In its data the label is carried either by a cue word in the "
        f"text ({words}) or by the image's main colour ({colours}), the other modality being neutral "
        f"(the words {' or '.join(NEUTRAL_WORDS)}, a grey image)."
    )


def demo_examples(model, processor, count: int = 3, max_words: int = 6, tries: int = 300) -> list[tuple[PIL.Image.Image, str]]:
    """Up to `count` pairs drawn with the demo generator (texts of at most `max_words` words, the label carried by the
    text or the image in turn) that `model` classifies right, each alone as the Space does; distinct labels first."""
    model.eval()
    rng = np.random.default_rng(0)
    right = []
    for attempt in range(tries):
        label, carrier = attempt % len(DEMO_LABEL_NAMES), CARRIERS[(attempt // len(DEMO_LABEL_NAMES)) % len(CARRIERS)]
        text = demo_text(label if carrier == "text" else None, rng)
        if len(text.split()) > max_words:
            continue
        image = demo_image(label if carrier == "image" else None, rng, DEMO_IMAGE_SIZE)
        with torch.no_grad():
            predicted = int(model(**processor(images=image, text=text).to(model.device)).logits.argmax(dim=-1))
        if predicted == label:
            right.append((label, image, text))
        if len({label for label, _, _ in right}) == count:
            break
    first_of_label = {}
    for index, (label, _, _) in enumerate(right):
        first_of_label.setdefault(label, index)
    order = sorted(first_of_label.values()) + [index for index in range(len(right)) if index not in first_of_label.values()]
    return [(image, text) for _, image, text in (right[index] for index in order[:count])]
