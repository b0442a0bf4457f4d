#!/usr/bin/env python
"""SPP-SCL and its ablations on MVSA-Single (train / dev), with frozen MiniLM and EfficientNet-Lite0 towers.

    python experiments/mvsa_single.py --data_dir ../shared/data/mvsa_single --output_dir outputs/mvsa_single \
        [--variants default paper] [--rows ...] [--seeds 0 1 2] [--epochs N] [--workers 2]

Each run (variant, row, seed) trains on train, scores dev after every epoch and keeps the epoch with the best dev
weighted F1; its dev scores at that epoch are appended as one JSON line to `<results_dir>/runs.jsonl`. Runs
already there are skipped, so an interrupted command can simply be started again. Dev both selects the epoch and
is reported, so the numbers are optimistic (the test split is held back).

Rows:
- `logreg`: scikit-learn LogisticRegression on the towers' pooled features (MiniLM: mean over the real tokens of
  the last layer; EfficientNet: mean over the 7x7 map), standardised; C chosen on dev; class_weight None.
- `text_only` / `image_only`: the SPP-SCL head with cross-entropy only, the other modality's shared-space
  embedding (`image_embeds` / `text_embeds`) replaced by zeros in every forward, train and dev (see `blank_modality`
  for why the embedding and not the cached input features).
- `fusion_ce`: cross-entropy only. `ce_intra`: cross-entropy + both intra-modal losses.
- `sppscl_one_step` / `sppscl_two_step`: the full objective with either update.

Both towers are frozen, so their outputs are extracted once per variant (`extract_features`) into one cache
folder shared by every row and seed; the heads train from that cache. Checkpoints are not written: the best
epoch's head is kept in memory.
"""

import argparse
import json
import logging
import os
import shutil
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoTokenizer, TrainerCallback, set_seed


REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

# Importing the tower module registers the EfficientNet-Lite tower with AutoConfig / AutoModel (spawned workers too).
from experiments.efficientnet_lite_tower import save_text_tower_folder, save_vision_tower_folder  # noqa: E402
from modeling_sppscl import SppSclModel, SppSclProcessor  # noqa: E402
from modeling_sppscl.data.feature_cache import CachedFeatureCollator  # noqa: E402
from modeling_sppscl.data.readers import load_clmlf_folder  # noqa: E402
from modeling_sppscl.reporting.metrics import build_compute_metrics  # noqa: E402
from modeling_sppscl.data.feature_cache import extract_features  # noqa: E402
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments  # noqa: E402


logger = logging.getLogger("mvsa_single")

VARIANTS = ("default", "paper")
ROWS = ("logreg", "text_only", "image_only", "fusion_ce", "ce_intra", "sppscl_one_step", "sppscl_two_step")
# Chosen from the measured time per epoch so that every run fits in about an hour on 2 CPU cores (docs/RESULTS.md).
DEFAULT_EPOCHS = {"default": 10, "paper": 3}
# Pending runs start in this order, so that an interrupted command has the comparison that matters first.
RUN_ORDER = ("logreg", "fusion_ce", "sppscl_two_step", "ce_intra", "sppscl_one_step", "text_only", "image_only")
# float16 halves the paper variant's cache (4 layers x 202 positions x 384 x 4061 texts: 5.0 GB in float32).
CACHE_DTYPES = {"default": "float32", "paper": "float16"}
LOGREG_C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
PLOT_RUN = ("default", "sppscl_two_step", 0)
FIGURES_DIR = REPO_ROOT / "docs" / "figures"
MAX_FIGURE_BYTES = 300_000

CE_ONLY = {"intra_text_loss_weight": 0.0, "intra_image_loss_weight": 0.0, "inter_loss_weight": 0.0}


@dataclass(frozen=True)
class Row:
    """How a row differs from the full objective: loss weights, update, and a modality blanked to zeros."""

    loss_weights: dict
    update: str = "one_step"
    blanked: str | None = None


# CE-only and CE+intra rows use the one-step update, as measured: the two-step update then ran an AdamW step on
# all-zero gradients whenever the gate opened (with the inter weight at 0 it now takes no step 2 either).
HEAD_ROWS = {
    "text_only": Row(CE_ONLY, blanked="image"),
    "image_only": Row(CE_ONLY, blanked="text"),
    "fusion_ce": Row(CE_ONLY),
    "ce_intra": Row({"inter_loss_weight": 0.0}),
    "sppscl_one_step": Row({}),
    "sppscl_two_step": Row({}, update="two_step"),
}


@dataclass
class Recipe:
    """The paper's optimisation recipe; only the number of epochs is ours."""

    learning_rate: float = 1e-4
    weight_decay: float = 1e-6
    batch_size: int = 64
    dropout: float = 0.2
    lr_halving_epochs: float = 10


# ----- towers and caches ----------------------------------------------------------------------------------------
def prepare_towers(output_dir: Path, text_tower: str = "minilm", mpnet_parts_dir: str | None = None) -> tuple[Path, Path]:
    """The text tower (`TEXT_TOWERS` name) and EfficientNet-Lite0 as `save_pretrained` folders (written once) that
    `AutoModel` can load; MPNet's parts come from `mpnet_parts_dir` where given."""
    text_folder, vision_folder = output_dir / "towers" / text_tower, output_dir / "towers" / "efficientnet_lite0"
    if not (text_folder / "config.json").is_file():
        save_text_tower_folder(output_dir / "towers", text_tower, mpnet_parts_dir)
    if not (vision_folder / "config.json").is_file():
        save_vision_tower_folder(output_dir / "towers")
    return text_folder, vision_folder


def build_model(variant: str, towers: tuple[Path, Path], label_names: list[str], **config) -> SppSclModel:
    return SppSclModel.from_text_vision_pretrained(
        str(towers[0]), str(towers[1]), variant=variant, id2label=dict(enumerate(label_names)), **config
    )


def build_processor(model: SppSclModel, towers: tuple[Path, Path]) -> SppSclProcessor:
    tokenizer = AutoTokenizer.from_pretrained(str(towers[0]))
    image_processor = AutoImageProcessor.from_pretrained(str(towers[1]))
    return SppSclProcessor.for_config(model.config, image_processor, tokenizer)


def cache_variant(variant: str, towers, splits, label_names, cache_dir: Path) -> dict:
    """Extract (or find) the variant's cached tower outputs; returns each split's cached rows (memory-mapped: a job
    sent to a worker process carries their files' paths, not their contents)."""
    model = build_model(variant, towers, label_names)
    processor = build_processor(model, towers)
    caches = {}
    for split in ("train", "validation"):
        start = time.perf_counter()
        with warnings.catch_warnings():
            # The paper variant's towers would follow train mode; the cache holds eval-mode outputs (see RESULTS.md).
            warnings.filterwarnings("ignore", message="frozen_towers_follow_train_mode")
            caches[split] = extract_features(model, processor, splits[split], cache_dir=cache_dir, storage_dtype=CACHE_DTYPES[variant])
        logger.info("%s %s cache: %s (%.1f s)", variant, split, [file["filename"] for file in caches[split].cache_files],
                    time.perf_counter() - start)
    return caches


# ----- the rows ------------------------------------------------------------------------------------------------
def blank_modality(model: SppSclModel, modality: str) -> None:
    """Replace the modality's shared-space embedding by zeros in every forward, so nothing of it reaches the fusion
    or the classifier.

    Zeroing the cached input features instead was tried first and fails: a constant input gives the branch's
    BatchNorm layers a zero batch variance, their running variance decays to ~1e-8, and at evaluation the tiny gap
    between the running mean and the constant is divided by sqrt(1e-8 + eps), so the blanked branch emits a large
    constant (image embeddings ~100 instead of ~0) and every dev sample gets the same class.
    """
    projection = {"text": model.text_projection, "image": model.image_projection}[modality]
    projection.register_forward_hook(lambda module, inputs, output: torch.zeros_like(output))


class KeepBestEpoch(TrainerCallback):
    """Remembers the dev scores of every epoch and, in memory, the head of the epoch with the best dev weighted
    F1 (the first such epoch on ties); no checkpoint is written."""

    def __init__(self, metric: str = "eval_weighted_f1"):
        self.metric = metric
        self.history: list[dict] = []
        self.best: dict | None = None
        self.best_state: dict | None = None

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        self.history.append(dict(metrics, epoch=round(state.epoch)))
        if self.best is None or metrics[self.metric] > self.best[self.metric]:
            self.best = self.history[-1]
            # The frozen towers never change, so only the head is copied.
            self.best_state = {
                name: tensor.detach().clone()
                for name, tensor in model.state_dict().items()
                if not name.startswith(("text_model.", "vision_model."))
            }

    def restore(self, model) -> None:
        model.load_state_dict(self.best_state, strict=False)


def head_run(job: dict) -> dict:
    """Train one SPP-SCL head from the cache and return its record."""
    start = time.perf_counter()
    variant, row_name, seed, epochs = job["variant"], job["row"], job["seed"], job["epochs"]
    row, recipe = HEAD_ROWS[row_name], Recipe()
    set_seed(seed)
    model = build_model(variant, job["towers"], job["label_names"], dropout=recipe.dropout, **row.loss_weights)
    if row.blanked:
        blank_modality(model, row.blanked)
    collator = CachedFeatureCollator()
    caches = job["caches"]
    run_dir = Path(job["output_dir"]) / "runs" / variant / row_name / f"seed{seed}"
    args = SppSclTrainingArguments(
        output_dir=str(run_dir),
        sppscl_update=row.update,
        num_train_epochs=epochs,
        per_device_train_batch_size=recipe.batch_size,
        # Same as training: the paper variant's fusion attends across the batch, so batch size matters at eval too.
        per_device_eval_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        weight_decay=recipe.weight_decay,
        lr_scheduler_type="halving",
        lr_halving_epochs=recipe.lr_halving_epochs,
        eval_strategy="epoch",
        logging_strategy="epoch",
        save_strategy="no",
        report_to="none",
        seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=True,
    )
    best = KeepBestEpoch()
    trainer = SppSclTrainer(
        model=model,
        args=args,
        train_dataset=caches["train"],
        eval_dataset=caches["validation"],
        data_collator=collator,
        compute_metrics=build_compute_metrics(model.config.id2label),
        callbacks=[best],
    )
    trainer.train()
    best.restore(trainer.model)
    gate_rates = [entry["gate_step2_rate"] for entry in trainer.state.log_history if "gate_step2_rate" in entry]
    record = make_record(job, best.best, time.perf_counter() - start, row.update)
    record["dev_weighted_f1_by_epoch"] = [round(entry["eval_weighted_f1"], 4) for entry in best.history]
    if row_name.startswith("sppscl"):
        # Share of steps in which the gate let the inter-modal loss act, averaged over epochs.
        record["gate_step2_rate"] = round(float(np.mean(gate_rates)), 4) if gate_rates else None
    if job.get("plot_dir"):
        record["figures"] = write_figures(trainer, caches, Path(job["plot_dir"]), job.get("figures_dir"))
    return record


def make_record(job: dict, scores: dict, seconds: float, update: str | None) -> dict:
    record = {
        "row": job["row"], "variant": job["variant"], "seed": job["seed"], "epochs": job["epochs"],
        "best_epoch": scores.get("epoch"), "update": update,
    }
    for name in ("accuracy", "weighted_f1", "macro_f1", *(f"f1_{label}" for label in job["label_names"])):
        record[name] = round(float(scores[f"eval_{name}"]), 6)
    record.update(wall_seconds=round(seconds, 1), threads=torch.get_num_threads(), train_samples=job["train_samples"])
    return record


def pooled_features(cache) -> np.ndarray:
    """Per sample: MiniLM's last layer averaged over the real tokens, then EfficientNet's 1280-d spatial mean."""
    rows = []
    for sample in cache:
        text = np.asarray(sample["text_hidden_states"], dtype=np.float32).reshape(sample["text_shape"])[-1]
        # The paper cache holds padded texts with their mask; the default cache holds the real tokens only.
        mask = np.asarray(sample["attention_mask"], dtype=bool) if "attention_mask" in sample else np.ones(len(text), dtype=bool)
        image = np.asarray(sample["image_features"], dtype=np.float32).mean(axis=(1, 2))
        rows.append(np.concatenate([text[mask].mean(axis=0), image]))
    return np.stack(rows)


def logreg_run(job: dict) -> dict:
    """LogisticRegression on the towers' pooled features; C is chosen on dev by weighted F1 (smallest C on ties)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    caches = job["caches"]
    features = {split: pooled_features(cache) for split, cache in caches.items()}
    labels = {split: np.asarray(cache["label"]) for split, cache in caches.items()}
    scaler = StandardScaler().fit(features["train"])
    train_x, dev_x = scaler.transform(features["train"]), scaler.transform(features["validation"])
    best = None
    for c in LOGREG_C_GRID:
        # class_weight=None: no reweighting of the small neutral class, as in every other row.
        classifier = LogisticRegression(C=c, max_iter=5000, class_weight=None).fit(train_x, labels["train"])
        predicted = classifier.predict(dev_x)
        weighted = f1_score(labels["validation"], predicted, average="weighted")
        if best is None or weighted > best[0]:
            best = (weighted, c, predicted)
    _, c, predicted = best
    dev = labels["validation"]
    per_class = f1_score(dev, predicted, average=None, labels=list(range(len(job["label_names"]))))
    scores = {
        "eval_accuracy": accuracy_score(dev, predicted),
        "eval_weighted_f1": f1_score(dev, predicted, average="weighted"),
        "eval_macro_f1": f1_score(dev, predicted, average="macro"),
        **{f"eval_f1_{name}": value for name, value in zip(job["label_names"], per_class)},
    }
    record = make_record(job, scores, time.perf_counter() - start, None)
    record["C"] = c
    return record


def run_job(job: dict) -> dict:
    return logreg_run(job) if job["row"] == "logreg" else head_run(job)


# ----- figures ---------------------------------------------------------------------------------------------------
def write_figures(trainer, caches, plot_dir: Path, figures_dir: str | None) -> list[str]:
    """`write_plots` for the selected epoch's head; copies go to docs/figures, shrunk if over 300 KB."""
    from modeling_sppscl.reporting.plots import write_plots

    plot_dir.mkdir(parents=True, exist_ok=True)
    written = write_plots(plot_dir, trainer, {"validation": caches["validation"]})
    if not figures_dir:
        return [str(path) for path in written]
    target = Path(figures_dir)
    target.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in written:
        copy = target / f"mvsa_single_{path.name}"
        shutil.copyfile(path, copy)
        if copy.stat().st_size > MAX_FIGURE_BYTES:
            import PIL.Image

            # A palette of 64 colours keeps scatter plots readable at a fraction of the size.
            PIL.Image.open(path).convert("RGB").quantize(colors=64).save(copy, optimize=True)
        copies.append(str(copy.relative_to(REPO_ROOT) if copy.is_relative_to(REPO_ROOT) else copy))
    return copies


# ----- driver ----------------------------------------------------------------------------------------------------
def read_runs(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_key(record: dict) -> tuple:
    return (record["variant"], record["row"], record["seed"], record["epochs"], record["train_samples"])


def append_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def spread_subset(dataset, count: int):
    """`count` rows evenly spread over the split: its files are sorted by label, so the first rows would be one class."""
    if count >= len(dataset):
        return dataset
    return dataset.select(np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist())


def start_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=str(REPO_ROOT.parent / "shared" / "data" / "mvsa_single"))
    parser.add_argument("--output_dir", default="outputs/mvsa_single", help="Towers, feature caches, figures (not committed).")
    parser.add_argument("--results_dir", default=str(REPO_ROOT / "experiments" / "results" / "mvsa_single"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help=f"Epochs of every head run (default: {DEFAULT_EPOCHS}).")
    parser.add_argument("--workers", type=int, default=1, help="Runs in parallel, each in its own process.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores / workers).")
    parser.add_argument("--max_train_samples", type=int, default=None, help="Use N train samples, spread evenly (tests).")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="Use N dev samples, spread evenly (tests).")
    parser.add_argument("--no_plots", action="store_true", help=f"Skip the figures of the run {PLOT_RUN}.")
    parser.add_argument("--figures_dir", default=str(FIGURES_DIR), help="Where the figures are copied ('' for nowhere).")
    return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.INFO)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    output_dir = Path(args.output_dir)
    results_path = Path(args.results_dir) / "runs.jsonl"
    done = {run_key(record) for record in read_runs(results_path)}

    loaded = load_clmlf_folder(args.data_dir)
    splits = {"train": loaded.splits["train"], "validation": loaded.splits["validation"]}
    for split, count in (("train", args.max_train_samples), ("validation", args.max_eval_samples)):
        if count is not None:
            splits[split] = spread_subset(splits[split], count)
    towers = prepare_towers(output_dir)

    jobs = []
    for variant in args.variants:
        head_epochs = args.epochs or DEFAULT_EPOCHS[variant]
        # logreg has no epochs; its key holds None.
        pending = [
            (row, seed, None if row == "logreg" else head_epochs)
            for row in sorted(args.rows, key=RUN_ORDER.index) for seed in args.seeds
            if (variant, row, seed, None if row == "logreg" else head_epochs, len(splits["train"])) not in done
        ]
        if not pending:
            continue
        torch.set_num_threads(os.cpu_count() or 1)
        caches = cache_variant(variant, towers, splits, loaded.label_names, output_dir / "feature_cache")
        for row, seed, epochs in pending:
            plot = not args.no_plots and (variant, row, seed) == PLOT_RUN
            jobs.append({
                "variant": variant, "row": row, "seed": seed, "epochs": epochs, "towers": towers, "caches": caches,
                "label_names": loaded.label_names, "output_dir": str(output_dir), "train_samples": len(splits["train"]),
                "plot_dir": str(output_dir / "figures") if plot else None, "figures_dir": args.figures_dir or None,
            })
    logger.info("%d runs to do (%d already in %s), %d worker(s) x %d thread(s)", len(jobs), len(done), results_path, args.workers, threads)

    records = []
    if args.workers == 1:
        start_worker(threads)
        for job in jobs:
            records.append(finish(run_job(job), results_path))
    else:
        # Separate processes (spawned: no forked torch thread pools), each with its own thread count.
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), initializer=start_worker, initargs=(threads,)) as pool:
            # Each record is written as soon as its run ends, so an interruption loses only the runs in flight.
            for future in as_completed([pool.submit(run_job, job) for job in jobs]):
                records.append(finish(future.result(), results_path))
    return records


def finish(record: dict, results_path: Path) -> dict:
    append_record(results_path, record)
    logger.info(
        "%s %s seed %d: best epoch %s, dev acc %.4f, weighted F1 %.4f (%.0f s)", record["variant"], record["row"],
        record["seed"], record["best_epoch"], record["accuracy"], record["weighted_f1"], record["wall_seconds"],
    )
    return record


if __name__ == "__main__":
    main()
