"""No silent data problem: labels matched across splits by one rule, image paths kept inside the data folder, texts
that are strings, questionable rows reported (refused with --strict_data), and every row not used as given
accounted for in data_report.json."""

import json
import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest

from conftest import tiny_image_processor, tiny_model, tiny_tokenizer
from modeling_sppscl import SppSclProcessor
from modeling_sppscl.data.preflight import check_before_training
from modeling_sppscl.data.readers import load_clmlf_folder, load_csv_or_jsonl, load_datasets_dataset, load_hfm_text_files
from run_sppscl import DataArguments, load_data
from tests.helpers_data import write_clmlf_folder, write_jpeg


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def labelled(labels: list, prefix: str) -> list[dict]:
    return [{"id": f"{prefix}{index}", "text": f"tweet {prefix} {index}", "label": label} for index, label in enumerate(labels)]


def load_texts(tmp_path: Path, train: list[dict], dev: list[dict], **kwargs):
    return load_csv_or_jsonl(train_file=write_jsonl(tmp_path / "train.jsonl", train),
                             validation_file=write_jsonl(tmp_path / "dev.jsonl", dev), image_column=None, **kwargs)


# ---------------------------------------------------------------- labels


def test_names_in_train_and_ids_in_dev_are_refused(tmp_path):
    with pytest.raises(ValueError) as error:
        load_texts(tmp_path, labelled(["positive", "negative", "neutral"], "t"), labelled([0, 1], "d"))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'dev.jsonl'}, line 1 (id 'd0'): label 0 is an integer id")
    assert "names ['negative', 'neutral', 'positive']" in message and "--class_names" in message


def test_class_names_say_which_id_is_which(tmp_path):
    names = ["positive", "negative", "neutral"]  # not alphabetical: ids must follow this order
    loaded = load_texts(tmp_path, labelled(["positive", "negative", "neutral"], "t"), labelled([0, 1, 2, "neutral"], "d"), label_names=names)
    assert loaded.label_names == names
    assert [names[label] for label in loaded.splits["validation"]["label"]] == ["positive", "negative", "neutral", "neutral"]
    assert [names[label] for label in loaded.splits["train"]["label"]] == ["positive", "negative", "neutral"]


def test_ids_in_train_and_names_in_dev_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"dev.jsonl, line 2 \(id 'd1'\): label 'positive' is a name, but the labels of split 'train' are integer ids 0..1"):
        load_texts(tmp_path, labelled([0, 1], "t"), labelled([1, "positive"], "d"))


def test_one_id_among_names_in_dev_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"dev.jsonl, line 3 \(id 'd2'\): label '1' is an integer id"):
        load_texts(tmp_path, labelled(["good", "bad"], "t"), labelled(["bad", "good", "1"], "d"))


# ---------------------------------------------------------------- image paths


@pytest.fixture
def image_table(tmp_path):
    """A data folder holding one image, a shared store outside it, and a function writing train.jsonl."""
    data, store = tmp_path / "data", tmp_path / "store"
    write_jpeg(data / "images" / "in.jpg")
    write_jpeg(store / "out.jpg")

    def load(image_paths: list[str], **kwargs):
        rows = [{"id": f"r{index}", "image": path, "text": "good day", "label": "a"} for index, path in enumerate(image_paths)]
        return load_csv_or_jsonl(train_file=write_jsonl(data / "train.jsonl", rows), **kwargs)

    return data, store, load


@pytest.mark.parametrize("written", ["../store/out.jpg", "images/../../store/out.jpg", "ABSOLUTE"])
def test_image_path_outside_the_data_folder_is_refused(image_table, written):
    data, store, load = image_table
    written = str(store / "out.jpg") if written == "ABSOLUTE" else written
    with pytest.raises(ValueError) as error:
        load(["images/in.jpg", written])
    message = str(error.value)
    assert message.startswith(f"{data / 'train.jsonl'}, line 2 (id 'r1'): the image path {written!r} leads outside the data folder")
    assert "--allow_images_outside_data_dir" in message


def test_image_path_outside_is_read_and_counted_when_allowed(image_table, tmp_path):
    data, store, load = image_table
    loaded = load(["images/in.jpg", "../store/out.jpg", str(store / "out.jpg")], allow_images_outside_data_dir=True)
    assert loaded.splits["train"]["image"][1:] == [str(data.resolve() / "../store/out.jpg"), str(store / "out.jpg")]
    assert loaded.report["images_outside_data_dir"] == {"train": 2}


def test_links_inside_the_data_folder_and_absolute_paths_into_it_are_allowed(image_table):
    data, store, load = image_table
    (data / "images" / "linked.jpg").symlink_to(store / "out.jpg")
    os.symlink(store, data / "store_link")
    loaded = load(["images/linked.jpg", "store_link/out.jpg", str(data.resolve() / "images" / "in.jpg"), "images/./in.jpg"])
    assert len(loaded.splits["train"]) == 4 and loaded.report["images_outside_data_dir"] == {}


def test_clmlf_and_hfm_ids_that_leave_the_image_folder_are_refused(tmp_path):
    folder = write_clmlf_folder(tmp_path / "mvsa", {"train": [{"id": "1", "text": "good", "emotion_label": 0}]})
    (folder / "train.json").write_text(json.dumps([{"id": "1", "text": "good", "emotion_label": 0}, {"id": "../../x", "text": "bad", "emotion_label": 2}]))
    with pytest.raises(ValueError, match=r"train.json, item 1 \(id '../../x'\): the image path '../../x.jpg' leads outside"):
        load_clmlf_folder(folder)
    hfm = tmp_path / "hfm.txt"
    hfm.write_text("['1', 'good', 0]\n['/etc/x', 'bad', 1]\n")
    with pytest.raises(ValueError, match=r"hfm.txt, line 2 \(id '/etc/x'\): the image path '/etc/x.jpg' leads outside"):
        load_hfm_text_files(hfm, image_dir=folder / "images")


def test_datasets_folder_with_a_path_outside_is_refused(tmp_path):
    write_jpeg(tmp_path / "outside.jpg")
    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"image": ["../outside.jpg"], "text": ["good"], "label": ["a"]}).save_to_disk(str(folder))
    with pytest.raises(ValueError, match=r"split train, row 0 \(id 'train-0'\): the image path '../outside.jpg' leads outside"):
        load_datasets_dataset(str(folder))
    assert load_datasets_dataset(str(folder), allow_images_outside_data_dir=True).report["images_outside_data_dir"] == {"train": 1}


def test_run_sppscl_passes_the_allow_flag(image_table):
    data, store, load = image_table
    load(["../store/out.jpg"], allow_images_outside_data_dir=True)  # writes train.jsonl
    arguments = DataArguments(train_file=str(data / "train.jsonl"))
    with pytest.raises(ValueError, match="leads outside the data folder"):
        load_data(arguments, seed=0)
    arguments.allow_images_outside_data_dir = True
    assert load_data(arguments, seed=0).report["images_outside_data_dir"] == {"train": 1}


# ---------------------------------------------------------------- texts


@pytest.mark.parametrize("text, shown", [(123, "int (123)"), (1.5, "float (1.5)"), (True, "bool (True)"), (["a", "b"], "list (['a', 'b'])")])
def test_a_text_that_is_not_a_string_is_refused(tmp_path, text, shown):
    rows = [{"id": "a", "text": "good day", "label": "x"}, {"id": "b", "text": text, "label": "y"}]
    with pytest.raises(ValueError) as error:
        load_csv_or_jsonl(train_file=write_jsonl(tmp_path / "train.jsonl", rows), image_column=None)
    assert str(error.value).startswith(f"{tmp_path / 'train.jsonl'}, line 2 (id 'b'): the text is a {shown}, not a string")


def test_non_string_texts_of_datasets_clmlf_and_hfm_are_refused(tmp_path):
    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": [7, 8], "label": ["a", "b"]}).save_to_disk(str(folder))
    with pytest.raises(ValueError, match=r"split train, row 0 \(id 'train-0'\): the text is a int \(7\), not a string"):
        load_datasets_dataset(str(folder), image_column=None)
    clmlf = write_clmlf_folder(tmp_path / "mvsa", {"train": [{"id": "1", "text": 2024, "emotion_label": 0}]})
    with pytest.raises(ValueError, match=r"train.json, item 0 \(id '1'\): the text is a int \(2024\)"):
        load_clmlf_folder(clmlf)
    hfm = tmp_path / "train.txt"
    hfm.write_text("['1', 'good', 0]\n['2', None, 1]\n['3', 3.0, 1]\n")
    with pytest.raises(ValueError, match=r"train.txt, line 3 \(id '3'\): the text is a float \(3.0\)"):
        load_hfm_text_files(hfm, empty_text="skip")


# ---------------------------------------------------------------- questionable rows


@pytest.fixture
def questionable(tmp_path):
    """Train with a duplicate id whose labels conflict; dev with an id of train, no `neutral` pair; test with the
    text and image (a copy of the file) of a train pair under another id, and a pair with a train text only."""
    for name, colour in (("a", (200, 0, 0)), ("b", (0, 200, 0)), ("c", (0, 0, 200))):
        write_jpeg(tmp_path / "images" / f"{name}.jpg", colour)
    shutil.copy(tmp_path / "images" / "a.jpg", tmp_path / "images" / "a_copy.jpg")

    def row(row_id, text, image, label):
        return {"id": row_id, "text": text, "image": f"images/{image}.jpg", "label": label}

    train = [row("t0", "good day", "a", "positive"), row("t1", "bad day", "b", "negative"), row("t1", "bad day", "b", "neutral"),
             row("t2", "okay", "c", "neutral")]
    dev = [row("t2", "okay", "c", "neutral"), row("d1", "fine", "c", "positive"), row("d2", "sad", "b", "negative")]
    dev[0]["label"] = "negative"
    test = [row("x0", " good day ", "a_copy", "positive"), row("x1", "bad day", "c", "negative"), row("x2", "blue sky", "a", "positive")]
    files = {name: write_jsonl(tmp_path / f"{name}.jsonl", rows) for name, rows in (("train", train), ("dev", dev), ("test", test))}
    return files


def test_questionable_rows_are_warned_about_and_reported(questionable, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        loaded = load_csv_or_jsonl(questionable["train"], questionable["dev"], questionable["test"])
    report = loaded.report
    assert report["conflicting_duplicate_ids"] == {"train": ["t1"], "validation": [], "test": []}
    assert report["ids_also_in_train"] == {"validation": ["t2"], "test": []}
    assert report["pairs_also_in_train"] == {"validation": [], "test": ["x0"]}
    assert report["classes_without_validation_rows"] == ["neutral"]
    warned = caplog.text
    assert "1 id(s) of split 'train' occur more than once with different labels, e.g. ['t1']" in warned
    assert "1 id(s) of split 'validation' are in the train split too, e.g. ['t2']" in warned
    assert "1 pair(s) of split 'test' have the text and image of a train pair, e.g. ids ['x0']" in warned
    assert "no validation pair has class(es) ['neutral']" in warned

    model = tiny_model()
    processor = SppSclProcessor.for_config(model.config, tiny_image_processor(), tiny_tokenizer(tmp_path / "tok"))
    run = SimpleNamespace(do_train=True, do_eval=True, do_predict=True)
    check_before_training(loaded, model, processor, run, {}, report_dir=str(tmp_path))
    document = json.loads((tmp_path / "data_report.json").read_text())
    for kind in ("conflicting_duplicate_ids", "ids_also_in_train", "pairs_also_in_train", "classes_without_validation_rows"):
        assert document[kind] == report[kind]

    with pytest.raises(ValueError) as error:
        check_before_training(loaded, model, processor, run, {}, strict_data=True)
    message = str(error.value)
    assert message.startswith("The data cannot be used for this run:\n- ") and message.count("\n- ") == 4
    assert message.count("(--strict_data: fix the data") == 4 and "['t1']" in message and "['x0']" in message


def test_clean_data_has_nothing_questionable(tmp_path):
    loaded = load_texts(tmp_path, labelled(["a", "b"], "t"), labelled(["a", "b"], "d"))
    report = loaded.report
    assert report["conflicting_duplicate_ids"] == {"train": [], "validation": []}
    assert report["ids_also_in_train"] == {"validation": []} and report["pairs_also_in_train"] == {"validation": []}
    assert report["classes_without_validation_rows"] == []


# ---------------------------------------------------------------- accounting


def test_data_report_accounts_for_rows_not_used_as_given(tmp_path):
    (tmp_path / "train.csv").write_text("id,text,label\nt0,good day,a\n,,\n\nt1,bad day,b\nt2,fine,a\n")
    (tmp_path / "dev.csv").write_text("id,text,label\nd0,good,a\nd1,bad,b\n")
    loaded = load_csv_or_jsonl(tmp_path / "train.csv", tmp_path / "dev.csv", image_column=None)
    model = tiny_model()
    processor = SppSclProcessor.for_config(model.config, tiny_image_processor(), tiny_tokenizer(tmp_path / "tok"))
    run = SimpleNamespace(do_train=True, do_eval=True, do_predict=False)
    check_before_training(loaded, model, processor, run, {"train": 2, "validation": None}, report_dir=str(tmp_path))
    splits = json.loads((tmp_path / "data_report.json").read_text())["splits"]
    assert splits["train"]["pairs"] == 3 and splits["train"]["rows_without_value"] == 2
    assert splits["train"]["left_out_by_max_samples"] == 1 and "left_out_by_max_samples" not in splits["validation"]
    assert splits["validation"]["rows_without_value"] == 0
