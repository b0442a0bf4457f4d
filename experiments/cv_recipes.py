"""Head recipes for `experiments/cv.py`: optimisation settings plus `SppSclConfig` overrides (`config`).

`paper_*` is the recipe of docs/RESULTS.md's earlier dev runs (the paper's settings at 10 epochs); `cv_best` is
what the cross-validated search chose (see docs/RESULTS.md); the ablation rows are `cv_best` with loss terms
switched off via `--set`.
"""

import copy
import json

PAPER = {
    "update": "two_step", "epochs": 10, "batch_size": 64, "learning_rate": 1e-4, "weight_decay": 1e-6,
    "lr_halving_epochs": 10, "config": {"dropout": 0.2},
}
CE_ONLY = {"intra_text_loss_weight": 0.0, "intra_image_loss_weight": 0.0, "inter_loss_weight": 0.0}

RECIPES = {
    "paper_two_step": PAPER,
    "paper_one_step": {**PAPER, "update": "one_step"},
    "paper_fusion_ce": {**PAPER, "update": "one_step", "config": {**PAPER["config"], **CE_ONLY}},
}


def recipe_with(base: dict, overrides: list[str]) -> dict:
    """`base` with `key=value` overrides (`config.key=value` for the model config); values are JSON (a bare word
    is a string)."""
    recipe = copy.deepcopy(base)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set: expected key=value or config.key=value, got {item!r}")
        key, text = item.split("=", 1)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        target = recipe["config"] if key.startswith("config.") else recipe
        target[key.removeprefix("config.")] = value
    return recipe
