#!/usr/bin/env python
"""Search over head recipes from the frozen-tower cache, scored by cross-validation (optuna, TPE sampler).

    python experiments/cv_search.py --trials 8 --folds 0 1 [--seed 0]

Each trial trains the one-step SPP-SCL head (one-step: half the cost of two-step; the update is compared in the
ablations) on the training folds of every `--folds` fold and scores the held-out fold after its last epoch; the
objective is the mean over those folds of (weighted F1 + macro F1) / 2, so that the small neutral class counts.
Every fold run is a record in `runs.jsonl` (label `search`, the trial's number and recipe), and the optuna study is kept in
a journal file next to it, so an interrupted search resumes with the trials it has.
"""

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import optuna
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from experiments.cv import DEFAULT_TEXT_TOWER, RESULTS_DIR, append_run, cached_pool, folds, head_run  # noqa: E402
from experiments.cv_recipes import PAPER  # noqa: E402


logger = logging.getLogger("cv_search")


def suggest_recipe(trial: optuna.Trial) -> dict:
    """CE weighted 1; the contrastive weights are relative to it (the paper's 5:1:1:1 is 0.2 each)."""
    intra = trial.suggest_float("intra_loss_weight", 0.0, 0.5)
    return {
        **PAPER, "update": "one_step", "lr_halving_epochs": None,
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True),
        "epochs": trial.suggest_int("epochs", 3, 8),
        "config": {
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "temperature": trial.suggest_float("temperature", 0.05, 0.5, log=True),
            "ce_loss_weight": 1.0, "intra_text_loss_weight": intra, "intra_image_loss_weight": intra,
            "inter_loss_weight": trial.suggest_float("inter_loss_weight", 0.0, 0.5),
            "class_weights": [1.0, trial.suggest_float("neutral_class_weight", 1.0, 4.0), 1.0],
        },
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--seed", type=int, default=0, help="Seed of the sampler and of every head run.")
    parser.add_argument("--data_dir", default=str(REPO_ROOT.parent / "shared" / "data" / "mvsa_single"))
    parser.add_argument("--output_dir", default="outputs/mvsa_single")
    parser.add_argument("--results_dir", default=str(RESULTS_DIR))
    parser.add_argument("--threads", type=int, default=1)
    # The search ran on MiniLM only; cv.py's other text towers are not searched.
    parser.set_defaults(text_tower=DEFAULT_TEXT_TOWER, mpnet_parts_dir=None)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.INFO)
    results = Path(args.results_dir)
    pool, label_names, towers = cached_pool(args)
    fold_indices = folds(pool, results / "folds.json")
    torch.set_num_threads(args.threads)

    def objective(trial: optuna.Trial) -> float:
        recipe = suggest_recipe(trial)
        scores = []
        for fold in args.folds:
            start = time.perf_counter()
            record = {"label": "search", "trial": trial.number, "recipe": recipe, "fold": fold, "seed": args.seed}
            record.update(head_run(pool, fold_indices, fold, args.seed, recipe, towers, label_names, Path(args.output_dir)))
            record.update(wall_seconds=round(time.perf_counter() - start, 1), threads=args.threads)
            append_run(results / "runs.jsonl", record)
            scores.append((record["weighted_f1"] + record["macro_f1"]) / 2)
        return statistics.fmean(scores)

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(results / "search_journal.log")))
    study = optuna.create_study(study_name="mvsa_single_cv", storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=args.seed), load_if_exists=True)
    # First trial: the paper's loss ratios at a typical head learning rate, neutral weighed 2 (it is 10 % of the data).
    if not study.trials:
        study.enqueue_trial({"intra_loss_weight": 0.2, "learning_rate": 1e-3, "epochs": 6, "dropout": 0.2,
                             "temperature": 0.07, "inter_loss_weight": 0.2, "neutral_class_weight": 2.0})
    remaining = args.trials - len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE])
    study.optimize(objective, n_trials=max(0, remaining))
    logger.info("best trial %d: %.4f %s", study.best_trial.number, study.best_value, study.best_params)


if __name__ == "__main__":
    main()
