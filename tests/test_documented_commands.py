"""Every snippet tagged for testing in README.md, and every snippet of a written model card, runs as written
against a demo folder made here.

Convention: a fenced block right after a `<!-- test: demo-folder -->` line runs in a folder holding
`outputs/demo` (a copy of the session's demo run, tests/conftest.py) and the images the snippets name (cat.jpg, photo.jpg, a.jpg, b.jpg).
Network-only steps get their offline equivalent: `pip install X` becomes `pip install --no-index X` (it checks that
what is installed satisfies X, without downloading), and the README's `accelerate launch` line runs with the demo's
arguments in place of the real data and Hub towers.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- test: demo-folder -->"
QUICK_DEMO = ["--do_train", "--do_eval", "--num_train_epochs", "1", "--max_train_samples", "32", "--max_eval_samples", "16",
              "--per_device_train_batch_size", "8", "--report_to", "none", "--disable_tqdm", "true"]


def fenced_blocks(text: str, tagged_only: bool) -> list[tuple[str, str]]:
    """(language, code) of each fenced block, only those after the marker line when `tagged_only`."""
    pattern = re.compile(r"(?P<marker><!-- test: demo-folder -->\n)?```(?P<language>\w+)\n(?P<code>.*?)\n```", re.DOTALL)
    return [(match["language"], match["code"]) for match in pattern.finditer(text) if match["marker"] or not tagged_only]


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def run_block(language: str, code: str, cwd: Path) -> None:
    if language == "bash":
        code = code.replace("pip install ", "python -m pip install --no-index ")
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        assert language == "python", language
        command = [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{code}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, demo_run) -> Path:
    folder = tmp_path_factory.mktemp("user")
    shutil.copytree(demo_run, folder / "outputs" / "demo")
    for seed, name in enumerate(("cat.jpg", "photo.jpg", "a.jpg", "b.jpg")):
        PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / name)
    return folder


@pytest.mark.slow
def test_readme_snippets_run_as_written(workdir):
    blocks = fenced_blocks((REPO_ROOT / "README.md").read_text(), tagged_only=True)
    assert len(blocks) >= 2
    for language, code in blocks:
        run_block(language, code, workdir)


@pytest.mark.slow
def test_model_card_snippets_run_as_written(workdir):
    blocks = fenced_blocks((workdir / "outputs" / "demo" / "README.md").read_text(), tagged_only=False)
    languages = [language for language, _ in blocks]
    assert languages.count("python") >= 1 and "bash" in languages
    for language, code in blocks:
        if language != "bibtex":
            run_block(language, code, workdir)


@pytest.mark.slow
@pytest.mark.distributed
def test_readme_accelerate_command_starts_two_processes_on_cpu(tmp_path):
    readme = (REPO_ROOT / "README.md").read_text()
    launch = next(line for line in readme.splitlines() if line.startswith("accelerate launch"))
    launcher = launch[: launch.index("run_sppscl.py")].split()
    assert launcher == ["accelerate", "launch", "--multi_gpu", "--num_processes", "2"]
    result = subprocess.run([*launcher, str(REPO_ROOT / "run_sppscl.py"), "--output_dir", str(tmp_path / "out"), *QUICK_DEMO],
                            cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es) (DistributedType.MULTI_CPU), per-device train batch 8, global train batch 16" in result.stderr
