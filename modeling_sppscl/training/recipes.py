"""The training recipes `run_sppscl.py` applies when a run builds a model from two towers: one per variant.

A recipe is a set of command-line values, each applied only where the command line leaves that option unset, and
`SppSclConfig` overrides, each applied only where `--config_overrides` leaves that key unset. So every flag still
overrides the recipe, value by value.

- `default` is the recipe cross-validated on MVSA-Single in docs/RESULTS.md (`finetune_text` in
  experiments/cv_recipes.py): the text tower fine-tuned at its own learning rate, the vision tower frozen and cached,
  cross-entropy alone with the rarest class weighted 2.
- `paper` is the paper's: frozen towers, 150 epochs at learning rate 1e-4 halved every 10 epochs (`halving`, whose
  period `--lr_halving_epochs` defaults to 10), batch 64, the two-step update, the paper's loss weights (the config's own).
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


# A class-weight rule that the training split's label counts turn into `class_weights` (see `resolve_class_weights`).
RAREST_X2 = "rarest_x2"


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str
    # Command-line values keyed by option name (a dataclass field of the run's arguments).
    arguments: dict[str, Any]
    # `SppSclConfig` overrides, keyed by config attribute.
    config: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """The recipe as the flags it stands for, for `--help` and the log."""
        flags = " ".join(f"--{name} {format_value(value)}" for name, value in self.arguments.items())
        overrides = ",".join(f"{key}={format_value(value)}" for key, value in self.config.items())
        return f"{flags} --config_overrides {overrides}" if overrides else flags


RECIPES = {
    "default": Recipe(
        name="default",
        source="cross-validated on MVSA-Single, docs/RESULTS.md (experiments/cv_recipes.py FINETUNE_TEXT)",
        arguments={
            "freeze_text_model": False, "freeze_vision_model": True, "tower_learning_rate": 1e-4, "learning_rate": 1e-3,
            "warmup_steps": 20, "num_train_epochs": 4, "lr_scheduler_type": "linear", "per_device_train_batch_size": 64,
            "per_device_eval_batch_size": 64, "weight_decay": 1e-6, "sppscl_update": "one_step",
            "train_sampling_strategy": "group_by_length",
        },
        config={
            "dropout": 0.2, "temperature": 0.07, "ce_loss_weight": 1.0, "intra_text_loss_weight": 0.0,
            "intra_image_loss_weight": 0.0, "inter_loss_weight": 0.0, "class_weights": RAREST_X2,
        },
    ),
    "paper": Recipe(
        name="paper",
        source="the paper's training setup",
        arguments={
            "freeze_text_model": True, "freeze_vision_model": True, "num_train_epochs": 150, "learning_rate": 1e-4,
            "lr_scheduler_type": "halving", "per_device_train_batch_size": 64, "per_device_eval_batch_size": 64,
            "weight_decay": 1e-6, "sppscl_update": "two_step",
        },
    ),
}


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(format_value(item) for item in value) + "]"
    return str(value)


def unset_values(recipe: Recipe, explicit: set[str], config_overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The recipe's arguments whose option is not in `explicit`, and its config values whose key is not in the
    user's `config_overrides`."""
    arguments = {name: value for name, value in recipe.arguments.items() if name not in explicit}
    config = {key: value for key, value in recipe.config.items() if key not in config_overrides}
    return arguments, config


def resolve_class_weights(rule: Any, train_labels: Sequence[int] | None, num_labels: int) -> list[float] | None:
    """`class_weights` as given, or for `rarest_x2`: weight 2 for the class(es) with the fewest training pairs and 1
    for the others, from the training split's counts (None, unweighted, when every class is equally frequent or
    there is no training split)."""
    if rule != RAREST_X2:
        return rule
    if not train_labels:
        return None
    counts = Counter(int(label) for label in train_labels)
    per_class = [counts.get(index, 0) for index in range(num_labels)]
    fewest = min(per_class)
    if fewest == max(per_class):
        return None
    return [2.0 if count == fewest else 1.0 for count in per_class]


__all__ = ["RAREST_X2", "RECIPES", "Recipe", "resolve_class_weights", "unset_values"]
