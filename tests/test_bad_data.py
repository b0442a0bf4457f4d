"""A corpus of bad data, generated here: each case ends in a clear error (file, row/line/item, id and the fix) or a
correct report, through the readers and through the checks `run_sppscl.py` makes before training."""

import io
import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from modeling_sppscl.data.readers import load_clmlf_folder, load_csv_or_jsonl, load_hfm_text_files
from tests.helpers_data import clmlf_items, write_clmlf_folder, write_json

# The label names the datasets' papers use, in their id order (literal: the readers' constants are what is tested).
MVSA_NAMES = ["positive", "neutral", "negative"]


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def text_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A text-only CSV (text, label)."""
    return write_lines(path, ["text,label", *[f"{text},{label}" for text, label in rows]])


def read_text_csv(train: Path, dev: Path | None = None, **kwargs):
    return load_csv_or_jsonl(train_file=train, validation_file=dev, image_column=None, **kwargs)


def truncate(path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(noise).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


# ---------------------------------------------------------------- labels


def test_two_spellings_of_one_label_in_train_are_refused(tmp_path):
    train = text_csv(tmp_path / "train.csv", [("good day", "positive"), ("bad day", "negative"), ("fine day", "Positive")])
    with pytest.raises(ValueError) as error:
        read_text_csv(train)
    message = str(error.value)
    assert "'Positive' and 'positive' differ only in case" in message and "line 4 (id 'train-2')" in message
    assert "--class_names" in message


def test_class_names_map_every_spelling_to_one_class(tmp_path):
    train = text_csv(tmp_path / "train.csv", [("good day", "positive"), ("bad day", "negative"), ("fine day", "Positive")])
    loaded = read_text_csv(train, label_names=["negative", "positive"])
    assert loaded.splits["train"]["label"] == [1, 0, 1] and loaded.report["case_normalised_labels"] == {"train": 1}


def test_dev_label_differing_in_case_only_is_matched_and_counted(tmp_path):
    train = text_csv(tmp_path / "train.csv", [("good day", "positive"), ("bad day", "negative")])
    dev = text_csv(tmp_path / "dev.csv", [("nice", "Positive"), ("awful", " NEGATIVE ")])
    loaded = read_text_csv(train, dev)
    assert loaded.label_names == ["negative", "positive"] and loaded.splits["validation"]["label"] == [1, 0]
    assert loaded.report["case_normalised_labels"] == {"train": 0, "validation": 2}


def test_dev_label_that_train_lacks_is_refused(tmp_path):
    train = tmp_path / "train.jsonl"
    write_lines(train, [json.dumps({"id": "a", "text": "good", "label": "pos"}), json.dumps({"id": "b", "text": "bad", "label": "neg"})])
    dev = write_lines(tmp_path / "dev.jsonl", [json.dumps({"id": "c", "text": "meh", "label": "pos"}), "", json.dumps({"id": "d", "text": "hmm", "label": "mixed"})])
    with pytest.raises(ValueError) as error:
        load_csv_or_jsonl(train_file=train, validation_file=dev, image_column=None)
    message = str(error.value)
    assert f"{dev}, line 3 (id 'd'): unknown label 'mixed'" in message and "training split" in message and "--class_names" in message


def test_integer_dev_label_beyond_train_ids_is_refused(tmp_path):
    train = text_csv(tmp_path / "train.csv", [("a", "0"), ("b", "1")])
    dev = text_csv(tmp_path / "dev.csv", [("c", "2")])
    with pytest.raises(ValueError, match=r"dev.csv, line 2 \(id 'validation-0'\): unknown label '2'; allowed labels: ids 0..1"):
        read_text_csv(train, dev)


def test_missing_and_negative_labels_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"line 3 \(id 'train-1'\): the label is missing"):
        read_text_csv(text_csv(tmp_path / "a.csv", [("a", "x"), ("b", "")]))
    with pytest.raises(ValueError, match=r"line 2 \(id 'train-0'\): unknown label '-1'; label ids must be 0 or more"):
        read_text_csv(text_csv(tmp_path / "b.csv", [("a", "-1"), ("b", "0")]))


def test_mvsa_folder_whose_train_lacks_class_2_keeps_mvsa_names(tmp_path):
    folder = write_clmlf_folder(tmp_path / "mvsa_subset", {"train": clmlf_items([0, 1, 0]), "dev": clmlf_items([2, 1], "d")})
    loaded = load_clmlf_folder(folder)
    assert loaded.label_names == MVSA_NAMES and loaded.splits["validation"]["label"] == [2, 1]
    assert loaded.report["classes_without_train_rows"] == ["negative"]


def test_clmlf_labels_0_and_1_in_an_unnamed_folder_need_class_names(tmp_path):
    folder = write_clmlf_folder(tmp_path / "tweets", {"train": clmlf_items([0, 1, 0])})
    with pytest.raises(ValueError) as error:
        load_clmlf_folder(folder)
    message = str(error.value)
    assert "only 0 and 1" in message and "--class_names not_sarcastic,sarcastic" in message and "--class_names positive,neutral,negative" in message
    assert load_clmlf_folder(folder, label_names=["no", "yes"]).label_names == ["no", "yes"]


def test_folder_named_hfm_with_a_label_2_is_refused(tmp_path):
    folder = write_clmlf_folder(tmp_path / "hfm_copy", {"train": clmlf_items([0, 1, 2])})
    with pytest.raises(ValueError, match="says HFM.*label 2.*--class_names"):
        load_clmlf_folder(folder)


# ---------------------------------------------------------------- texts


def test_blank_text_is_refused_or_dropped_and_counted(tmp_path):
    items = clmlf_items([0, 1, 2])
    items[1]["text"] = " \t "
    folder = write_clmlf_folder(tmp_path / "mvsa", {"train": items})
    with pytest.raises(ValueError) as error:
        load_clmlf_folder(folder)
    assert f"{folder / 'train.json'}, item 1 (id '1'): the text is empty" in str(error.value) and "--empty_text skip" in str(error.value)
    loaded = load_clmlf_folder(folder, empty_text="skip")
    assert loaded.splits["train"]["id"] == ["0", "2"] and loaded.report["dropped_texts"] == {"train": 1}


def test_null_text_in_json_lines(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [json.dumps({"id": 5, "text": None, "label": 0}), json.dumps({"id": 6, "text": "ok", "label": 1})])
    with pytest.raises(ValueError, match=r"t.jsonl, line 1 \(id '5'\): the text is empty"):
        load_csv_or_jsonl(train_file=path, image_column=None)


# ---------------------------------------------------------------- malformed files


def test_clmlf_malformed_files_name_the_place(tmp_path):
    folder = tmp_path / "mvsa"
    write_clmlf_folder(folder, {"train": clmlf_items([0, 1, 2])})
    (folder / "train.json").write_text('[{"id": 1, "text": "a", "emotion_label": 0},\n {"id": 2, "text": "b" "emotion_label": 1}]')
    with pytest.raises(ValueError, match=r"train.json: invalid JSON \(.*line 2"):
        load_clmlf_folder(folder)
    write_json(folder / "train.json", [{"id": 1, "text": "a", "emotion_label": 0}, 5])
    with pytest.raises(ValueError, match=r"train.json, item 1: expected a JSON object, got 5"):
        load_clmlf_folder(folder)
    write_json(folder / "train.json", {"id": 1, "text": "a", "emotion_label": 0})
    with pytest.raises(ValueError, match="expected a JSON list"):
        load_clmlf_folder(folder)
    write_json(folder / "train.json", [{"id": "0", "text": "a", "emotion_label": 0}, {"text": "b", "emotion_label": 2}])
    with pytest.raises(ValueError, match=r"item 1 \(id 'None'\): the id is missing"):
        load_clmlf_folder(folder)


def test_clmlf_empty_split_file_is_an_empty_split(tmp_path):
    folder = write_clmlf_folder(tmp_path / "mvsa", {"train": clmlf_items([0, 1, 2])})
    (folder / "dev.json").write_text("[]")
    (folder / "test.json").write_text("")
    loaded = load_clmlf_folder(folder)
    assert len(loaded.splits["validation"]) == 0 and len(loaded.splits["test"]) == 0


def test_csv_with_too_many_fields_names_the_line(tmp_path):
    path = write_lines(tmp_path / "train.csv", ["text,label", "fine,a", "too,many,fields"])
    with pytest.raises(ValueError, match=r"train.csv: cannot read it as csv: .*line 3"):
        read_text_csv(path)


def test_csv_keeps_strings_bom_blank_lines_and_multiline_texts(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes('\ufeffid,text,label\n007,NA,a\n\n008,"two\nlines",b\n009,null,a\n010,,b\n'.encode())
    with pytest.raises(ValueError) as error:
        read_text_csv(path)
    # The header is line 1, 007 line 2, a blank line 3, 008 lines 4-5, 009 line 6, 010 line 7.
    assert "line 7 (id '010'): the text is empty" in str(error.value)
    loaded = read_text_csv(path, empty_text="skip")
    assert loaded.splits["train"]["id"] == ["007", "008", "009"] and loaded.splits["train"]["text"] == ["NA", "two\nlines", "null"]


def test_csv_header_only_gives_an_empty_split(tmp_path):
    train = text_csv(tmp_path / "train.csv", [("a", "x")])
    dev = write_lines(tmp_path / "dev.csv", ["text,label"])
    loaded = read_text_csv(train, dev)
    assert len(loaded.splits["validation"]) == 0 and loaded.report["rows"] == {"train": 1, "validation": 0}


def test_non_utf8_tsv_is_read_with_replacement_characters(tmp_path):
    path = write_lines(tmp_path / "train.tsv", ["text\tlabel", "caf\u00e9 ok\tx", "fine\ty"], encoding="latin-1")
    loaded = load_csv_or_jsonl(train_file=path, image_column=None)
    assert loaded.splits["train"]["text"] == ["caf\ufffd ok", "fine"] and loaded.report["undecodable_files"] == [str(path)]


def test_jsonl_bad_line_after_blank_lines(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [json.dumps({"text": "a", "label": 0}), "", "  ", '{"text": "b", "label": }'])
    with pytest.raises(ValueError, match=r"t.jsonl, line 4: invalid JSON"):
        load_csv_or_jsonl(train_file=path, image_column=None)


def test_unsupported_extension(tmp_path):
    path = write_lines(tmp_path / "train.xlsx", ["x"])
    with pytest.raises(ValueError, match=r"unsupported file type '.xlsx'; use .csv, .tsv, .jsonl or .json"):
        load_csv_or_jsonl(train_file=path)


def test_hfm_line_with_too_few_fields(tmp_path):
    path = write_lines(tmp_path / "train.txt", ["['1', 'fine', 0]", "['2', 'no label']"])
    with pytest.raises(ValueError, match=r"train.txt, line 2: expected \[id, text, label\]"):
        load_hfm_text_files(path)


# ---------------------------------------------------------------- images


def test_image_folder_named_images_in_capitals_is_found(tmp_path):
    folder = write_clmlf_folder(tmp_path / "mvsa", {"train": clmlf_items([0, 1, 2])}, image_folder="Images")
    for missing_image in ("error", "blank"):
        loaded = load_clmlf_folder(folder, missing_image=missing_image, require_images=missing_image != "blank")
        assert not loaded.report["text_only"] and loaded.report["blanked"] == {"train": 0}
        assert all(Path(path).parent.name == "Images" for path in loaded.splits["train"]["image"])


def test_truncated_jpeg_meets_the_missing_image_policy(tmp_path):
    folder = write_clmlf_folder(tmp_path / "mvsa", {"train": clmlf_items([0, 1, 2])})
    truncate(folder / "images" / "1.jpg")
    with pytest.raises(ValueError) as error:
        load_clmlf_folder(folder, verify_pixels=True)
    assert "id '1'" in str(error.value) and "truncated" in str(error.value) and "--missing_image skip|blank" in str(error.value)
    assert load_clmlf_folder(folder, verify_pixels=True, missing_image="skip").splits["train"]["id"] == ["0", "2"]
    blanked = load_clmlf_folder(folder, verify_pixels=True, missing_image="blank")
    assert blanked.splits["train"]["image"][1] is None and blanked.report["blanked"] == {"train": 1}


def test_empty_image_file_bomb_and_strip_images(tmp_path):
    folder = write_clmlf_folder(tmp_path / "mvsa", {"train": clmlf_items([0, 1, 2, 0])})
    (folder / "images" / "0.jpg").write_bytes(b"")
    PIL.Image.new("1", (9000, 9000)).save(folder / "images" / "1.jpg", format="PNG")  # 81 MP in a few KB
    PIL.Image.new("L", (3000, 10)).save(folder / "images" / "2.jpg", format="PNG")
    with pytest.raises(ValueError) as error:
        load_clmlf_folder(folder)
    message = str(error.value)
    assert "3 image(s)" in message and "id '0'" in message and "UnidentifiedImageError" in message
    assert "id '1'" in message and "max_pixels" in message and "id '2'" in message and "max_aspect_ratio" in message
    assert load_clmlf_folder(folder, missing_image="skip").report["skipped"] == {"train": 3}


def test_no_image_folder_with_blank_is_reported_text_only(tmp_path, caplog):
    folder = write_clmlf_folder(tmp_path / "mvsa", {"train": clmlf_items([0, 1, 2])}, image_folder="pictures")
    loaded = load_clmlf_folder(folder, missing_image="blank", require_images=False)
    assert loaded.report["text_only"] and "every pair gets a blank image" in caplog.text
