"""The model card and the Space of a real (small) demo run, checked against the run's own files: the saved
`TrainingArguments`, `config.json`, `trainer_state.json` and `*_results.json`; and cards of other runs (not
trained here, towers from the Hub, a fine-tuned tower, the paper's schedule) built from their objects."""

import json
import re

import numpy as np
import PIL.Image
import pytest
import torch
import transformers
from huggingface_hub import ModelCard
from transformers import pipeline

from modeling_sppscl.data.demo import DEMO_LABEL_NAMES, IMAGE_CLASS_COLOURS, NEUTRAL_COLOUR, TEXT_CLASS_WORDS
from modeling_sppscl.hub.model_card import build_model_card, training_hyperparameters
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments

from conftest import tiny_model


def section(text: str, heading: str) -> str:
    """The card's text under `heading`, up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n") + len(heading) + 1
    following = re.search(rf"^#{{1,{len(level)}}} ", text[start:], flags=re.MULTILINE)
    return text[start : start + following.start()] if following else text[start:]


def tables(text: str) -> list[list[list[str]]]:
    """The cells of each Markdown table in `text`, row by row (the header and the separator left out)."""
    found, rows = [], None
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            rows = [] if rows is None else rows
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows is not None:
            found.append(rows[2:])
            rows = None
    return found


def table(text: str) -> list[list[str]]:
    return tables(text)[0]


@pytest.mark.slow
def test_demo_card_says_it_is_the_demo_with_random_frozen_towers(demo_run):
    card = ModelCard.load(demo_run / "README.md")
    assert "This is the built-in demo of `run_sppscl.py`, not a model for use." in card.text
    assert "trained on the synthetic demo set that `run_sppscl.py` generates" in card.text
    model = section(card.text, "## Model")
    for tower, model_type in (("Text tower", "bert"), ("Vision tower", "resnet")):
        line = next(line for line in model.split("\n- ") if line.lstrip("- ").startswith(f"**{tower}:**"))
        assert "randomly initialised" in line and f"`{model_type}`" in line and "frozen in this run" in line, line
    assert section(card.text, "## Intended use").strip().startswith("None beyond trying this code")
    assert "in the language and domain of" not in card.text
    assert "sppscl-demo" in card.data.tags


@pytest.mark.slow
def test_card_task_is_other_never_text_classification(demo_run):
    card = ModelCard.load(demo_run / "README.md")
    assert card.data.pipeline_tag == "other" and card.data.to_dict()["inference"] is False
    assert not re.search(r"(?<!image-)text-classification", (demo_run / "README.md").read_text())


@pytest.mark.slow
def test_card_hyperparameters_are_the_runs(demo_run):
    args = torch.load(demo_run / "training_args.bin", weights_only=False)
    config = json.loads((demo_run / "config.json").read_text())
    text = ModelCard.load(demo_run / "README.md").text
    rows = dict(table(section(text, "### Training hyperparameters")))
    assert rows["learning_rate"] == str(args.learning_rate) == "0.003"
    assert rows["train_batch_size"] == str(args.train_batch_size) == "32"
    assert rows["eval_batch_size"] == str(args.eval_batch_size)
    assert rows["seed"] == str(args.seed) == "3"
    assert rows["num_epochs"] == str(args.num_train_epochs)
    assert rows["lr_scheduler_type"] == args.lr_scheduler_type.value
    assert rows["lr_scheduler_warmup_steps"] == str(args.warmup_steps) and float(args.warmup_steps) == 2
    assert rows["weight_decay"] == str(args.weight_decay) == "0.01"
    assert rows["optimizer"].startswith(f"{args.optim.value} with betas=({args.adam_beta1}, {args.adam_beta2})")
    assert rows["max_grad_norm"] == "0 (no clipping)" and args.max_grad_norm == 0
    assert rows["sppscl_update"].startswith(args.sppscl_update + " ")
    for name in ("ce_loss_weight", "intra_text_loss_weight", "intra_image_loss_weight", "inter_loss_weight", "temperature"):
        assert rows[name] == str(config[name]), name
    # Both towers frozen: no tower learning rate to show.
    assert "tower_learning_rate" not in rows
    cells = [cell for found in tables(text) for row in found for cell in row]
    assert len(tables(text)) == 5 and not [cell for cell in cells if cell in ("None", "", "null")]


@pytest.mark.slow
def test_card_numbers_are_the_results_files(demo_run):
    card = ModelCard.load(demo_run / "README.md")
    files = {"validation": ("eval", json.loads((demo_run / "eval_results.json").read_text())),
             "test": ("test", json.loads((demo_run / "test_results.json").read_text()))}
    everything = json.loads((demo_run / "all_results.json").read_text())
    results = {row[0]: row[1:] for row in table(section(card.text, "## Results"))}
    by_name = {"Accuracy": "accuracy", "Weighted F1": "weighted_f1", "Macro F1": "macro_f1"}
    for split, (prefix, scores) in files.items():
        assert results[split] == [f"{scores[f'{prefix}_{key}']:.4f}" for key in by_name.values()]
        assert all(everything[f"{prefix}_{key}"] == scores[f"{prefix}_{key}"] for key in by_name.values())
    for result in card.data.eval_results:
        prefix, scores = files[result.dataset_split]
        assert result.metric_value == scores[f"{prefix}_{by_name[result.metric_name]}"]
    evaluations = [entry for entry in json.loads((demo_run / "trainer_state.json").read_text())["log_history"] if "eval_loss" in entry]
    epochs = table(section(card.text, "### Training results"))
    assert len(epochs) == len(evaluations) == 3
    for row, entry in zip(epochs, evaluations):
        assert row[:2] == [str(entry["epoch"]), str(entry["step"])]
        assert row[3:] == [f"{entry[key]:.4f}" for key in ("eval_loss", "eval_accuracy", "eval_weighted_f1", "eval_macro_f1")]


@pytest.mark.slow
def test_card_framework_versions_and_citation(demo_run):
    text = ModelCard.load(demo_run / "README.md").text
    versions = section(text, "### Framework versions")
    for name, version in (("transformers", transformers.__version__), ("torch", torch.__version__)):
        assert f"- {name} {version}\n" in versions
    assert re.search(r"^- (datasets|tokenizers|sppscl) \S+$", versions, flags=re.MULTILINE)
    citation = section(text, "## Citation")
    assert re.search(r"eprint\s*=\s*\{2602\.20767\}", citation) and re.search(r"archivePrefix\s*=\s*\{arXiv\}", citation)
    assert "https://arxiv.org/abs/2602.20767" in citation and "AAAI 2026" in citation
    assert "Authors as listed" not in citation


def demo_label(image, text: str) -> int:
    """The label the demo generator gave the pair: the cue word's class, else the image's dominant colour's."""
    classes = [index for index, words in enumerate(TEXT_CLASS_WORDS) for word in text.split() if word in words]
    if classes:
        return classes[0]
    median = np.median(np.asarray(image, dtype=np.float32).reshape(-1, 3), axis=0)
    distances = np.linalg.norm(np.vstack([IMAGE_CLASS_COLOURS, NEUTRAL_COLOUR]) - median, axis=1)
    assert int(np.argmin(distances)) < len(IMAGE_CLASS_COLOURS), "neither modality carries a label"
    return int(np.argmin(distances))


@pytest.mark.slow
def test_demo_space_names_the_model_and_its_examples_are_classified_right(demo_run):
    space = demo_run / "space"
    settings = json.loads((space / "space_config.json").read_text())
    assert settings["title"] == "SPP-SCL demo: sppscl-demo-run"
    description = settings["description"]
    assert "Model: `sppscl-demo-run`" in description and "built-in demo model" in description
    assert f"({', '.join(DEMO_LABEL_NAMES)})" in description
    assert "apple or cherry: positive" in description and "red: positive" in description
    assert 2 <= len(settings["examples"]) <= 3
    classify = pipeline(model=str(demo_run), trust_remote_code=True, device="cpu")
    labels = set()
    for image_name, text in settings["examples"]:
        assert len(text.split()) <= 6, text
        image = space / image_name
        expected = DEMO_LABEL_NAMES[demo_label(PIL.Image.open(image).convert("RGB"), text)]
        assert classify({"image": str(image), "text": text}, top_k=1)[0]["label"] == expected, (image_name, text)
        labels.add(expected)
    assert len(labels) >= 2  # a model 3 epochs in classifies more than one class right


# ----- cards of other runs, built from their objects ---------------------------------------------------------
METRICS = {"test": {"accuracy": 0.5, "weighted_f1": 0.4, "macro_f1": 0.3}}


def test_evaluation_only_card_names_hub_towers_and_the_data_source():
    config = tiny_model().config
    card = build_model_card(config, METRICS, {}, [], "mvsa_single", data_source="the CLMLF-layout folder `mvsa_single` (read with `--data_dir`)",
                            tower_sources={"text": "google-bert/bert-base-uncased", "vision": "microsoft/resnet-50"})
    model = section(card.text, "## Model")
    assert "[`google-bert/bert-base-uncased`](https://huggingface.co/google-bert/bert-base-uncased)" in model
    assert model.count("not trained in this run") == 2
    assert "This run did not train the model" in section(card.text, "## Training")
    assert "like those of the CLMLF-layout folder `mvsa_single` (read with `--data_dir`)" in card.text
    assert "built-in demo" not in card.text and "sppscl-demo" not in card.data.tags


def test_fine_tuned_tower_and_paper_schedule_rows(tmp_path):
    model = tiny_model(freeze_text_model=False)
    args = SppSclTrainingArguments(output_dir=str(tmp_path), report_to="none", tower_learning_rate=1e-5, lr_scheduler_type="halving",
                                   warmup_steps=3, sppscl_update="one_step", use_cpu=True)
    rows = training_hyperparameters(SppSclTrainer(model=model, args=args))
    assert rows["tower_learning_rate"] == 1e-5 and rows["learning_rate"] == args.learning_rate
    assert rows["lr_scheduler_type"] == "halving: halved every 10 epochs (the paper's schedule)"
    assert rows["lr_scheduler_warmup_steps"] == 3
    assert rows["sppscl_update"].startswith("one_step ")
    assert None not in rows.values()
    card = build_model_card(model.config, METRICS, rows, [], "mvsa_single")
    model_section = section(card.text, "## Model")
    assert "fine-tuned in this run" in model_section and "frozen in this run" in model_section
    assert "| tower_learning_rate | 1e-05 |" in card.text
    without = training_hyperparameters(SppSclTrainer(model=model, args=SppSclTrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True)))
    assert without["tower_learning_rate"] == f"{args.learning_rate} (same as the head)"
