"""What a run on the user's data shows before it ends in an error: the data is read and checked before any tower
or tokenizer loads (a bad data file fails first, even beside a tower that does not exist), and at the default
`--log_level` the libraries' INFO lines (config dumps, datasets' builders) stay off the console while ours show."""

import io
import json
import logging
import re
import sys

import datasets
import numpy as np
import PIL.Image
import pytest
import transformers

import run_sppscl
from test_run_sppscl import run_script, tower_folders, write_clmlf_folder  # noqa: F401 (tower_folders is a fixture)


@pytest.fixture
def logging_restored():
    """`run_sppscl.run` sets up logging for a process; give the next tests back what they had."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    ours = {name: logging.getLogger(name).level for name in ("run_sppscl", "modeling_sppscl")}
    verbosities = transformers.utils.logging.get_verbosity(), datasets.utils.logging.get_verbosity()
    yield
    root.handlers[:], root.level = handlers, level
    for name, kept in ours.items():
        logging.getLogger(name).setLevel(kept)
    transformers.utils.logging.set_verbosity(verbosities[0])
    datasets.utils.logging.set_verbosity(verbosities[1])
    datasets.utils.logging.enable_propagation()
    logging.captureWarnings(False)


@pytest.mark.parametrize("missing, flags, expected", [
    ("train2", ["--do_train"], "train2.jpg"),
    (None, ["--do_train", "--do_predict"], "--do_predict needs a test split"),
])
def test_a_data_error_is_reported_before_any_tower_loads(tmp_path, monkeypatch, capsys, logging_restored, missing, flags, expected):
    data = tmp_path / "data"
    write_clmlf_folder(data, {"train": 6, "validation": 3}, missing=missing)
    # Towers that do not exist: loading either would end the run with an error naming its flag.
    monkeypatch.setattr(sys, "argv", [
        "run_sppscl.py", "--data_dir", str(data), "--text_model_name_or_path", str(tmp_path / "no-text"),
        "--vision_model_name_or_path", str(tmp_path / "no-vision"), "--output_dir", str(tmp_path / "out"),
        "--report_to", "none", "--disable_tqdm", "true", *flags,
    ])
    with pytest.raises(SystemExit) as exit_:
        run_sppscl.main()
    assert exit_.value.code == 1
    console = capsys.readouterr().err
    assert console.count("error: ") == 1, console
    message = console[console.index("error: "):]
    assert expected in message and "model_name_or_path" not in message, message


# transformers' and datasets' INFO lines (datasets' progress bars, "Generating train split: 6 examples", are
# progress, governed by --disable_tqdm).
LIBRARY_INFO = re.compile(r"Model config|loading configuration file|Using custom data configuration|Downloading and preparing|"
                          r"Unable to verify splits sizes|^Generating \w+ split$")


@pytest.mark.slow
def test_at_the_default_log_level_no_library_info_line_precedes_the_error(tmp_path, tower_folders):  # noqa: F811
    data = tmp_path / "data"
    write_clmlf_folder(data, {"train": 6, "validation": 3})
    rows = json.loads((data / "train.json").read_text())
    rows[1]["text"] = "[SEP]"  # no token but a special one: found with the tokenizer, so after the towers load
    (data / "train.json").write_text(json.dumps(rows))
    command = ["--data_dir", str(data), "--text_model_name_or_path", str(tower_folders / "text"),
               "--vision_model_name_or_path", str(tower_folders / "vision"), "--output_dir", str(tmp_path / "out"),
               "--do_train", "--report_to", "none"]

    result = run_script(command, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    console = result.stderr.splitlines()
    before_error = console[:next(index for index, line in enumerate(console) if line.startswith("error: "))]
    assert "no token the tokenizer knows" in result.stderr
    assert [line for line in before_error if LIBRARY_INFO.search(line)] == []
    assert any("INFO modeling_sppscl.data.validation: Checking images (train)" in line for line in before_error)
    assert any("INFO __main__: Recipe 'default'" in line for line in before_error)

    result = run_script([*command, "--log_level", "info"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Model config BertConfig" in result.stderr and "Model config ResNetConfig" in result.stderr


def write_truncated_image(path) -> None:
    """A noisy JPEG cut in half: its header reads, its pixels do not decode."""
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(noise).save(buffer, format="JPEG", quality=95)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_a_truncated_image_meets_the_policy_before_the_text_tower_runs(tmp_path, monkeypatch, capsys, logging_restored,
                                                                       tower_folders, policy):  # noqa: F811
    data, cache = tmp_path / "data", tmp_path / "cache"
    write_clmlf_folder(data, {"train": 6, "validation": 3})
    write_truncated_image(data / "images" / "validation1.jpg")
    monkeypatch.setattr(sys, "argv", [
        "run_sppscl.py", "--data_dir", str(data), "--text_model_name_or_path", str(tower_folders / "text"),
        "--vision_model_name_or_path", str(tower_folders / "vision"), "--freeze_text_model", "true",
        "--output_dir", str(tmp_path / "out"), "--do_train", "--do_eval", "--max_steps", "1", "--report_to", "none",
        "--write_space", "false", "--feature_cache_dir", str(cache), "--disable_tqdm", "true", "--missing_image", policy,
    ])
    if policy == "error":
        with pytest.raises(SystemExit) as exit_:
            run_sppscl.main()
        assert exit_.value.code == 1
        console = capsys.readouterr().err
        message = console[console.index("error: "):]
        assert "id 'validation1'" in message and "validation1.jpg" in message and "truncated" in message, message
        # Both towers are frozen, yet only the vision tower ran: its caches for train and validation, no text cache.
        assert sorted(path.name.split("-")[0] for path in cache.iterdir()) == ["vision", "vision"]
        return
    run_sppscl.main()
    named = [line for line in capsys.readouterr().err.splitlines() if "WARNING" in line and "validation1.jpg" in line]
    assert len(named) == 1 and "truncated" in named[0] and "dropped (--missing_image skip)" in named[0], named
    assert json.loads((tmp_path / "out" / "data_report.json").read_text())["splits"]["validation"]["skipped_for_image"] == 1
    assert sorted(path.name.split("-")[0] for path in cache.iterdir()) == ["text", "text", "vision", "vision"]
