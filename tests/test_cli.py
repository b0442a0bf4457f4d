"""run_sppscl.py's command line: every bad option refused in one line before any work (exit 2; bad data exit 1),
`--help` grouped with choices, the demo preset under overrides, the no-data refusal, the console script, LICENSE.

The parsing and checks run in-process; the few subprocess tests (slow) check what the user sees: one `error:`
line, no traceback (but with `--log_level debug`), nothing written, and a demo console without warnings."""

import configparser
import importlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import BertModel, ResNetModel

import run_sppscl
from conftest import tiny_bert_config, tiny_image_processor, tiny_resnet_config, tiny_tokenizer
from modeling_sppscl.training.arguments import UsageError, explicit_options
from modeling_sppscl.training.recipes import RECIPES, resolve_class_weights
from modeling_sppscl.training.trainer import TOWER_PREFIXES


REPO_ROOT = Path(__file__).resolve().parents[1]
TOWERS = ["--data_dir", "data", "--text_model_name_or_path", "text", "--vision_model_name_or_path", "vision"]


def refusal(argv: list[str]) -> str:
    with pytest.raises(UsageError) as error:
        run_sppscl.checked_arguments(argv)
    message = str(error.value)
    assert "\n" not in message and error.value.exit_code == 2
    return message


@pytest.mark.parametrize("argv, expected", [
    (["--num_train_epochs", "0"], "--num_train_epochs must be a number > 0"),
    (["--num_train_epochs", "-2"], "--num_train_epochs must be a number > 0"),
    (["--num_train_epochs", "nan"], "--num_train_epochs must be a number > 0"),
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be an integer >= 1, got 0"),
    (["--per_device_eval_batch_size", "0"], "--per_device_eval_batch_size must be an integer >= 1, got 0"),
    (["--learning_rate", "nan"], "--learning_rate must be a finite number > 0, got nan"),
    (["--learning_rate", "inf"], "--learning_rate must be a finite number > 0, got inf"),
    (["--learning_rate", "0"], "--learning_rate must be a finite number > 0, got 0.0"),
    (["--learning_rate=-1e-3"], "--learning_rate must be a finite number > 0, got -0.001"),
    (["--tower_learning_rate", "nan"], "--tower_learning_rate must be a finite number > 0, got nan"),
    (["--weight_decay", "nan"], "--weight_decay must be a finite number >= 0, got nan"),
    (["--max_train_samples", "-1"], "--max_train_samples must be an integer >= 1 (or left out), got -1"),
    (["--max_eval_samples", "0"], "--max_eval_samples must be an integer >= 1 (or left out), got 0"),
    (["--max_predict_samples", "0"], "--max_predict_samples must be an integer >= 1 (or left out), got 0"),
    (["--head_num_threads", "0"], "--head_num_threads must be an integer >= 1 (or left out), got 0"),
    (["--dataloader_num_workers", "-1"], "--dataloader_num_workers must be an integer >= 0, got -1"),
    (["--variant", "fast"], "argument --variant: invalid choice: 'fast'"),
    (["--missing_image", "ignore"], "argument --missing_image/--missing-image: invalid choice: 'ignore'"),
    (["--empty_text", "blank"], "argument --empty_text/--empty-text: invalid choice: 'blank'"),
    (["--feature_cache_on_device", "yes"], "argument --feature_cache_on_device/--feature-cache-on-device: invalid choice: 'yes'"),
    (["--feature_cache_dtype", "int8"], "argument --feature_cache_dtype/--feature-cache-dtype: invalid choice: 'int8'"),
    (["--feature_extraction_precision", "fp8"], "argument --feature_extraction_precision/--feature-extraction-precision: invalid choice: 'fp8'"),
    (["--sppscl_update", "three_step"], "argument --sppscl_update/--sppscl-update: invalid choice: 'three_step'"),
    (["--num_train_epochs", "two"], "argument --num_train_epochs/--num-train-epochs: invalid float value: 'two'"),
    (["--lr_halving_epochs", "5"], "--lr_halving_epochs is the period of --lr_scheduler_type halving, not of linear: add"),
    (["--lr_scheduler_type", "halving", "--lr_halving_epochs", "0"], "--lr_halving_epochs must be > 0, got 0.0"),
    (["--lr_scheduler_type", "step"], "argument --lr_scheduler_type/--lr-scheduler-type: invalid choice: 'step'"),
    (["--bogus", "1"], "not used by the HfArgumentParser: ['--bogus', '1']"),
    (["--config_overrides", "dropout"], "--config_overrides: expected name=value, got 'dropout'"),
    (["--config_overrides", "dropout=abc"], "--config_overrides: dropout must be float, got 'abc'"),
    (["--config_overrides", "num_text_layers=2.5"], "--config_overrides: num_text_layers must be int, got 2.5"),
    (["--config_overrides", "class_weights=heavy"], "--config_overrides: class_weights must be list[float] | None or one of ('rarest_x2',), got 'heavy'"),
    (["--config_overrides", "fusion_attention=cross"], "--config_overrides: fusion_attention must be one of ('batch', 'sample'), got 'cross'"),
    (["--config_overrides", "variant=paper"], "--config_overrides: variant is set with --variant, not here"),
    (["--text_model_name_or_path", "t"], "--text_model_name_or_path given but no data: pass --data_dir"),
    (["--model_name_or_path", "m", "--do_eval"], "--model_name_or_path given but no data: pass --data_dir"),
    (["--data_dir", "d"], "a run on your data needs --model_name_or_path, or both --text_model_name_or_path and"),
    (["--data_dir", "d", "--text_model_name_or_path", "t"], "a run on your data needs --model_name_or_path, or both"),
])
def test_each_bad_option_is_refused_in_one_line_naming_it(argv, expected):
    assert expected in refusal(argv)


def test_an_unknown_config_key_lists_every_key_with_its_type():
    message = refusal(["--config_overrides", "dropuot=0.1"])
    assert message.startswith("--config_overrides: unknown key 'dropuot'; the keys are: ")
    listed = message.split("the keys are: ")[1].split(", ")
    assert "dropout (float)" in listed and "class_weights (list[float] | None)" in listed and "num_text_layers (int)" in listed
    assert len(listed) == len(run_sppscl.SppSclConfig.__annotations__) - 5 - 2  # less the 5 keys with a flag, the 2 ClassVars


@pytest.fixture(scope="module")
def tower_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    BertModel(tiny_bert_config(num_hidden_layers=2)).save_pretrained(root / "text")
    tiny_tokenizer(root / "text")
    ResNetModel(tiny_resnet_config()).save_pretrained(root / "vision")
    tiny_image_processor().save_pretrained(root / "vision")
    return root


def test_a_config_the_towers_cannot_take_names_the_override_that_fixes_it(tower_folders):
    model_args = run_sppscl.ModelArguments(text_model_name_or_path=str(tower_folders / "text"),
                                           vision_model_name_or_path=str(tower_folders / "vision"),
                                           config_overrides="num_text_layers=4")
    with pytest.raises(UsageError) as error:
        run_sppscl.check_config(model_args, demo=False)
    # The 2-layer tower returns 3 hidden states.
    assert "num_text_layers must be in [1, 3] for a text tower with 2 layers" in str(error.value)
    assert "pass --config_overrides num_text_layers=VALUE with a value in that range" in str(error.value)
    model_args.config_overrides = "num_text_layers=3,dropout=1.5"
    with pytest.raises(UsageError, match=r"dropout must be in \[0, 1\), got 1.5: pass --config_overrides dropout=VALUE"):
        run_sppscl.check_config(model_args, demo=False)
    model_args.config_overrides = "num_text_layers=3"
    run_sppscl.check_config(model_args, demo=False)
    model_args.text_model_name_or_path = str(tower_folders / "missing")
    with pytest.raises(run_sppscl.UserError, match=f"--text_model_name_or_path {tower_folders / 'missing'}: "):
        run_sppscl.check_config(model_args, demo=False)


def test_help_lists_the_sppscl_groups_first_with_their_choices_and_the_recipes():
    text = run_sppscl.build_parser().format_help()
    titles = ["SPP-SCL model:", "SPP-SCL data:", "SPP-SCL training:", "SPP-SCL publishing:", "TrainingArguments (transformers):"]
    positions = [text.index("\n" + title) for title in titles]
    assert positions == sorted(positions)
    sections = dict(zip(titles, [text[start:end] for start, end in zip(positions, [*positions[1:], len(text)])]))
    assert "--sppscl_update {two_step,one_step}" in sections["SPP-SCL training:"]
    assert "--tower_learning_rate" in sections["SPP-SCL training:"] and "--lr_halving_epochs" in sections["SPP-SCL training:"]
    assert "--variant {paper,default}" in sections["SPP-SCL model:"]
    for option in ("--missing_image {error,skip,blank}", "--empty_text {error,skip}", "--feature_cache_on_device {auto,true,false}",
                   "--feature_cache_dtype {float32,float16}"):
        assert option in sections["SPP-SCL data:"], option
    assert "--push_space" in sections["SPP-SCL publishing:"]
    assert "--output_dir OUTPUT_DIR" in sections["TrainingArguments (transformers):"]
    assert re.search(r"--lr_scheduler_type \{linear,[\w,]*,halving\}", sections["TrainingArguments (transformers):"])
    sppscl_sections = text[positions[0]: positions[-1]]
    assert "--output_dir OUTPUT_DIR" not in sppscl_sections and "--push_to_hub [PUSH_TO_HUB]" not in sppscl_sections
    flat = " ".join(text.split())
    for recipe in RECIPES.values():
        assert recipe.describe() in flat
    assert "--cpu" not in flat.replace("(no `--cpu` needed)", "")


def test_no_arguments_and_demo_overrides_keep_the_demo_preset():
    for argv, changed in (([], {}), (["--num_train_epochs", "2", "--seed", "3"], {"num_train_epochs": 2, "seed": 3})):
        _, data_args, _, training_args, given = run_sppscl.checked_arguments(argv)
        assert run_sppscl.is_demo(data_args) and set(given) == set(changed)
        for name, value in {**run_sppscl.DEMO_PRESET, **changed}.items():
            # The Trainer's own save_total_limit / push_to_hub are None / False: ours hold the user's (training/checkpoints.py).
            actual = getattr(training_args, f"sppscl_{name}" if name in ("save_total_limit", "push_to_hub") else name)
            value = [] if (name, value) == ("report_to", "none") else value
            assert (actual.value if hasattr(actual, "value") else actual) in (value, [value]), name


def test_an_args_json_file_is_read_as_its_command_line(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({**dict(zip(TOWERS[::2], TOWERS[1::2])), "learning_rate": 2e-3, "do_train": True,
                                "report_to": ["none"]}).replace('"--', '"'))
    _, data_args, _, training_args, given = run_sppscl.checked_arguments([str(path)])
    assert data_args.data_dir == "data" and training_args.do_train and training_args.learning_rate == 2e-3
    assert training_args.num_train_epochs == 4 and "learning_rate" not in training_args.applied_recipe["values"]
    path.write_text("[1, 2]")
    with pytest.raises(UsageError, match="expected a JSON object"):
        run_sppscl.checked_arguments([str(path)])


def test_options_set_on_the_command_line_are_found_however_spelled():
    parser = run_sppscl.build_parser()
    given = explicit_options(parser, ["--no_freeze_text_model", "--num-train-epochs=3", "--freeze_vision_model", "false",
                                      "--learning_rate", "1e-3"])
    assert given == {"freeze_text_model": False, "num_train_epochs": 3.0, "freeze_vision_model": False, "learning_rate": 1e-3}


def test_every_flag_overrides_the_recipe_value_by_value():
    model_args, _, _, training_args, _ = run_sppscl.checked_arguments(
        [*TOWERS, "--learning_rate", "5e-3", "--freeze_text_model", "true", "--config_overrides", "dropout=0.1,class_weights=[1,1,3]"])
    assert training_args.learning_rate == 5e-3 and model_args.freeze_text_model
    assert training_args.num_train_epochs == 4 and training_args.tower_learning_rate == 1e-4
    overrides = run_sppscl.config_overrides(model_args)
    assert overrides == {**RECIPES["default"].config, "dropout": 0.1, "class_weights": [1.0, 1.0, 3.0]}
    applied = training_args.applied_recipe
    assert set(applied["values"]) == set(RECIPES["default"].arguments) - {"learning_rate", "freeze_text_model"}
    assert set(applied["config"]) == set(RECIPES["default"].config) - {"dropout", "class_weights"}


def test_variant_paper_trains_the_papers_recipe_and_a_saved_model_gets_none():
    model_args, _, _, training_args, _ = run_sppscl.checked_arguments([*TOWERS, "--variant", "paper"])
    assert (model_args.freeze_text_model, model_args.freeze_vision_model, model_args.config_overrides) == (True, True, None)
    assert (training_args.num_train_epochs, training_args.lr_scheduler_type, training_args.learning_rate) == (150, "halving", 1e-4)
    assert training_args.lr_halving_epochs == 10  # the halving schedule's default period
    assert (training_args.per_device_train_batch_size, training_args.sppscl_update) == (64, "two_step")
    _, _, _, training_args, _ = run_sppscl.checked_arguments(["--data_dir", "d", "--model_name_or_path", "m"])
    assert training_args.applied_recipe == {} and training_args.num_train_epochs == 3


@pytest.mark.parametrize("labels, expected", [
    ([0] * 5 + [1] * 2 + [2] * 4, [1.0, 2.0, 1.0]),
    ([0, 0, 1, 1, 2], [1.0, 1.0, 2.0]),
    ([0, 1, 1, 2, 2], [2.0, 1.0, 1.0]),
    ([0, 0, 1, 2, 2, 2], [1.0, 2.0, 1.0]),
    ([0, 1, 2, 2], [2.0, 2.0, 1.0]),  # a tie: both rarest classes
    ([0, 1, 2], None),  # all equal: unweighted
    ([0, 0, 2], [1.0, 2.0, 1.0]),  # a class with no training pair is the rarest
    (None, None),
])
def test_rarest_x2_weighs_the_rarest_training_class_2(labels, expected):
    assert resolve_class_weights("rarest_x2", labels, 3) == expected
    assert resolve_class_weights([1.0, 3.0, 1.0], labels, 3) == [1.0, 3.0, 1.0]


def test_the_traceback_is_asked_for_by_log_level_debug_only():
    assert run_sppscl.wants_traceback(["--log_level", "debug"]) and run_sppscl.wants_traceback(["--log-level=debug"])
    assert not run_sppscl.wants_traceback(["--log_level", "info", "--output_dir", "debug"])


def test_the_console_script_is_run_sppscl_main_and_the_license_matches_the_metadata():
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    scripts = dict(line.split(" = ") for line in setup["options.entry_points"]["console_scripts"].strip().splitlines())
    module, function = scripts["sppscl-train"].split(":")
    assert getattr(importlib.import_module(module), function) is run_sppscl.main
    assert "run_sppscl" in setup["options"]["py_modules"].split()
    assert setup["metadata"]["license"] == "Apache-2.0"
    text = (REPO_ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_importing_the_pipeline_again_does_not_warn_and_keeps_the_task():
    """`pipeline(..., trust_remote_code=True)` imports the saved pipeline file at every call."""
    import modeling_sppscl.pipeline_sppscl as module
    from transformers.pipelines import PIPELINE_REGISTRY
    from transformers.pipelines import base

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    base.logger.addHandler(handler)
    try:
        importlib.reload(module)
    finally:
        base.logger.removeHandler(handler)
    assert [record.getMessage() for record in records if record.levelno >= logging.WARNING] == []
    assert PIPELINE_REGISTRY.check_task("image-text-classification")[1]["impl"].__name__ == "ImageTextClassificationPipeline"


@pytest.mark.parametrize("variant", ["default", "paper"])
@pytest.mark.parametrize("weights", ["paper", "ce_only"])
def test_with_frozen_towers_every_trainable_parameter_reaches_the_loss(variant, weights):
    """Why run_sppscl.py sets `ddp_find_unused_parameters=False` when both towers are frozen: the loss that DDP's
    backward sees (step 1 of the two-step update, the whole objective of the one-step update) reaches every
    trainable parameter, in both variants, with the contrastive terms or without them."""
    import torch

    from conftest import tiny_model

    terms = {"intra_text_loss_weight": 0.0, "intra_image_loss_weight": 0.0, "inter_loss_weight": 0.0} if weights == "ce_only" else {}
    model = tiny_model(variant, **terms).train()
    generator = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(5, 20, (6, 9), generator=generator), "attention_mask": torch.ones(6, 9, dtype=torch.long),
              "pixel_values": torch.randn(6, 3, 32, 32, generator=generator), "labels": torch.tensor([0, 1, 2, 0, 1, 2])}
    model(**inputs).loss.backward()
    trainable = {name: param for name, param in model.named_parameters() if param.requires_grad}
    assert trainable and not any(name.startswith(TOWER_PREFIXES) for name in trainable)
    assert [name for name, param in trainable.items() if param.grad is None] == []
    # A trained BERT tower holds parameters no loss reaches: there DDP must keep looking for unused ones.
    model = tiny_model(variant, freeze_text_model=False, **terms).train()
    model(**inputs).loss.backward()
    unused = [name for name, param in model.named_parameters() if param.requires_grad and param.grad is None]
    assert unused == ["text_model.pooler.dense.weight", "text_model.pooler.dense.bias"]


# ----- what the user sees (subprocesses) -----------------------------------------------------------------------------
def run_script(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "run_sppscl.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_a_refused_option_prints_one_line_writes_nothing_and_debug_shows_the_traceback(tmp_path):
    output = tmp_path / "out"
    result = run_script(["--learning_rate", "nan", "--output_dir", str(output)], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --learning_rate must be a finite number > 0, got nan"]
    assert not output.exists()
    result = run_script(["--learning_rate", "nan", "--output_dir", str(output), "--log_level", "debug"], cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr and "UsageError" in result.stderr


@pytest.mark.slow
def test_bad_data_is_one_message_exit_1_and_nothing_is_computed(tmp_path, tower_folders):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "train.json").write_text(json.dumps([{"id": "7", "text": "a day", "emotion_label": 0}]))
    output = tmp_path / "out"
    result = run_script(["--data_dir", str(data), "--text_model_name_or_path", str(tower_folders / "text"),
                         "--vision_model_name_or_path", str(tower_folders / "vision"), "--output_dir", str(output),
                         "--do_train", "--config_overrides", "num_text_layers=3", "--class_names", "positive,neutral,negative"],
                        cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "7.jpg" in errors[0], result.stderr[-3000:]
    assert list(output.iterdir()) == []


WARNING_MARKERS = ("warning", "warn(", "overwriting", "find_unused_parameters")


@pytest.mark.slow
def test_the_demo_console_has_no_warning(tmp_path):
    result = run_script(["--num_train_epochs", "1", "--max_train_samples", "64", "--max_eval_samples", "32",
                         "--max_predict_samples", "16"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    console = (result.stdout + result.stderr).splitlines()
    assert [line for line in console if any(marker in line.lower() for marker in WARNING_MARKERS)] == []
    assert result.stdout.strip().splitlines()[-1].startswith("dev accuracy: ")
    assert (tmp_path / "outputs" / "demo" / "predictions_test.csv").is_file()
