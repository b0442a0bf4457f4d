"""The built wheel, installed into a fresh environment and run from outside the repository, trains the demo and
writes the model card and the Space from its package data (the template and the app travel with the package)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard


REPO_ROOT = Path(__file__).resolve().parents[1]
# What setup.cfg packages; the build runs on a copy so that it leaves nothing in the repository.
BUILD_INPUTS = ("setup.cfg", "pyproject.toml", "README.md", "run_sppscl.py", "modeling_sppscl", "configuration_sppscl")


def run(command: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_wheel_installs_and_trains_the_demo_quietly(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(REPO_ROOT / name, source / name)
    # No build isolation: setuptools is already here, and the build needs no network.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)], cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("sppscl-*.whl"))
    run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp_path / "venv")], cwd=tmp_path)
    python = str(tmp_path / "venv" / "bin" / "python")
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    located = run([python, "-c", "import modeling_sppscl, run_sppscl; print(modeling_sppscl.__file__); print(run_sppscl.__file__)"],
                  cwd=elsewhere, env=env)
    venv = (tmp_path / "venv").resolve()
    assert all(Path(line).resolve().is_relative_to(venv) for line in located.stdout.split()), located.stdout

    trained = run([python, "-m", "run_sppscl", "--output_dir", "demo", "--do_train", "--do_eval", "--num_train_epochs", "1",
                   "--max_train_samples", "32", "--max_eval_samples", "16", "--per_device_train_batch_size", "16",
                   "--report_to", "none", "--log_level", "error", "--disable_tqdm", "true"], cwd=elsewhere, env=env)
    folder = elsewhere / "demo"
    assert "sppscl" in ModelCard.load(folder / "README.md").data.tags
    assert (folder / "space" / "app.py").read_bytes() == (REPO_ROOT / "modeling_sppscl" / "hub" / "space_app" / "app.py").read_bytes()
    # --log_level error --disable_tqdm true: no INFO line, no warning, no progress bar.
    assert trained.stderr.strip() == "", trained.stderr[-3000:]
