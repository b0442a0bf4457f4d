"""docs/RESULTS.md agrees with the committed records: every row that `experiments/cv.py table` (cross-validation)
or `experiments/summarize.py` (the dev-split study) computes from the runs.jsonl files is in the report as printed,
so a number in the report is one that ran."""

import json
import sys
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "experiments"))
import cv  # noqa: E402


REPORT = REPO_ROOT / "docs" / "RESULTS.md"
# The cross-validation studies (a folds.json beside their runs.jsonl).
RESULTS_DIRS = sorted(path.parent for path in (REPO_ROOT / "experiments" / "results").glob("*/folds.json"))


def test_there_are_records_to_check():
    assert {path.name for path in RESULTS_DIRS} >= {"mvsa_single_cv", "mvsa_single_cv_mpnet", "mvsa_single_holdout"}


@pytest.mark.parametrize("results_dir", RESULTS_DIRS, ids=lambda path: path.name)
def test_every_row_of_the_records_is_in_the_report_as_computed(results_dir):
    report = REPORT.read_text()
    rows = [line for line in cv.table(results_dir / "runs.jsonl").splitlines() if line.startswith("| `")]
    assert rows
    missing = [row for row in rows if row not in report]
    assert not missing, f"{REPORT.name} lacks (or has other numbers for) these rows of {results_dir.name}:\n" + "\n".join(missing)


def test_every_row_of_the_held_out_dev_study_is_in_the_report_as_computed():
    import summarize

    records = summarize.read_runs(REPO_ROOT / "experiments" / "results" / "mvsa_single" / "runs.jsonl")
    rows = [line for line in summarize.markdown_tables(records).splitlines() if line.startswith("| `")]
    assert rows
    report = REPORT.read_text()
    missing = [row for row in rows if row not in report]
    assert not missing, f"{REPORT.name} lacks (or has other numbers for) these rows of mvsa_single:\n" + "\n".join(missing)


def test_the_recorded_run_sppscl_runs_carry_their_own_eval_results():
    holdout = REPO_ROOT / "experiments" / "results" / "mvsa_single_holdout"
    records = [record for record in cv.read_runs(holdout / "runs.jsonl") if record["recipe"] == "run_sppscl.py"]
    assert len(records) == 3
    for record in records:
        metrics = json.loads((holdout / f"plain_command_seed{record['seed']}" / record["source"]).read_text())
        assert {name: record[name] for name in cv.SCORES} == cv.scores_of(metrics)
