#!/usr/bin/env python
"""The markdown tables of `experiments/mvsa_single.py`'s runs: mean ± std over seeds, one table per variant.

    python experiments/summarize.py [--runs experiments/results/mvsa_single/runs.jsonl]

Scores are dev scores of the epoch that dev weighted F1 selected, in percent; std is the sample standard
deviation over seeds (0 for a single seed). Wall time is the mean per run.
"""

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


RUNS = Path(__file__).resolve().parent / "results" / "mvsa_single" / "runs.jsonl"
ROW_ORDER = ("logreg", "text_only", "image_only", "fusion_ce", "ce_intra", "sppscl_one_step", "sppscl_two_step")
SCORES = (("accuracy", "Acc"), ("weighted_f1", "W-F1"), ("macro_f1", "M-F1"),
          ("f1_positive", "F1 pos"), ("f1_neutral", "F1 neu"), ("f1_negative", "F1 neg"))


def read_runs(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def group_runs(records: list[dict]) -> dict[tuple, list[dict]]:
    """Runs grouped by (variant, row, epochs, train samples); a rerun of a seed replaces the earlier record."""
    latest = {}
    for record in records:
        key = (record["variant"], record["row"], record["epochs"], record.get("train_samples"), record["seed"])
        latest[key] = record
    groups = defaultdict(list)
    for (variant, row, epochs, samples, _), record in latest.items():
        groups[(variant, row, epochs, samples)].append(record)
    return groups


def row_rank(row: str) -> int:
    return ROW_ORDER.index(row) if row in ROW_ORDER else len(ROW_ORDER)


def markdown_tables(records: list[dict]) -> str:
    groups = group_runs(records)
    header = ["row", "seeds", "epochs", "best epoch"] + [title for _, title in SCORES] + ["wall s / run"]
    lines = []
    for variant in sorted({key[0] for key in groups}, key=lambda name: (name != "default", name)):
        lines += [f"**variant `{variant}`** (dev, %, mean ± std over seeds)", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        keys = sorted((key for key in groups if key[0] == variant), key=lambda key: (row_rank(key[1]), str(key[2])))
        for key in keys:
            runs = sorted(groups[key], key=lambda record: record["seed"])
            best_epochs = [run["best_epoch"] for run in runs if run.get("best_epoch") is not None]
            cells = [
                f"`{key[1]}`",
                ",".join(str(run["seed"]) for run in runs),
                "-" if key[2] is None else str(key[2]),
                " / ".join(str(epoch) for epoch in best_epochs) or "-",
            ]
            for name, _ in SCORES:
                mean, std = mean_std([100 * run[name] for run in runs])
                cells.append(f"{mean:.2f} ± {std:.2f}")
            cells.append(f"{statistics.fmean(run['wall_seconds'] for run in runs):.0f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=str(RUNS))
    args = parser.parse_args(argv)
    table = markdown_tables(read_runs(Path(args.runs)))
    print(table)
    return table


if __name__ == "__main__":
    main()
