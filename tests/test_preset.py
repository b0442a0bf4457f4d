"""`run_sppscl.py --preset NAME`: the preset's flags come first, so an explicit flag wins; its config overrides
are a valid SppSclConfig and match the cross-validated recipe (experiments/cv_recipes.py)."""

import pytest
from transformers import HfArgumentParser

import run_sppscl
from conftest import tiny_config
from experiments.cv_recipes import CANDIDATE
from modeling_sppscl.training.trainer import SppSclTrainingArguments


def parse(argv):
    parser = HfArgumentParser((run_sppscl.ModelArguments, run_sppscl.DataArguments, SppSclTrainingArguments))
    return parser.parse_args_into_dataclasses(args=run_sppscl.expand_preset(argv))


def test_preset_sets_the_recipe_and_explicit_flags_win(tmp_path):
    model_args, _, training = parse(["--output_dir", str(tmp_path), "--preset", "small_towers_cv", "--num_train_epochs", "9"])
    assert (training.num_train_epochs, training.learning_rate, training.sppscl_update) == (9, 1e-3, "one_step")
    overrides = run_sppscl.parse_config_overrides(model_args.config_overrides)
    assert overrides["class_weights"] == [1, 2, 1]
    tiny_config(**overrides)  # a valid config


def test_preset_matches_the_cross_validated_recipe(tmp_path):
    model_args, _, training = parse(["--output_dir", str(tmp_path), "--preset", "small_towers_cv"])
    recipe = CANDIDATE
    assert (training.num_train_epochs, training.learning_rate, training.weight_decay, training.per_device_train_batch_size) == (
        recipe["epochs"], recipe["learning_rate"], recipe["weight_decay"], recipe["batch_size"])
    assert training.lr_scheduler_type == "linear" and training.lr_halving_epochs is None
    assert run_sppscl.parse_config_overrides(model_args.config_overrides) == recipe["config"]


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="--preset must be followed by one of"):
        run_sppscl.expand_preset(["--preset", "nope"])
