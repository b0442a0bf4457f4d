"""What a run on the user's data shows before it ends in an error: the data is read and checked before any tower
or tokenizer loads (a bad data file fails first, even beside a tower that does not exist), and at the default
`--log_level` the libraries' INFO lines (config dumps, datasets' builders) stay off the console while ours show."""

import json
import logging
import re
import sys

import datasets
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
