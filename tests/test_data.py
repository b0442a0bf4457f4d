"""Readers of modeling_sppscl.data.readers on small files written here, and on the real data when it is there."""

import collections
import io
import json
import logging
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest

from modeling_sppscl.data.readers import (
    LoadedData,
    blank_image,
    load_clmlf_folder,
    load_csv_or_jsonl,
    load_datasets_dataset,
    load_hfm_text_files,
    load_image,
)
from tests.helpers_data import clmlf_items, real_data_folder, write_clmlf_folder, write_jpeg, write_json

# The label names the datasets' papers use, in their id order (literal: the readers' constants are what is tested).
MVSA_NAMES = ["positive", "neutral", "negative"]
HFM_NAMES = ["not_sarcastic", "sarcastic"]


def label_counts(loaded: LoadedData, split: str) -> list[int]:
    counts = collections.Counter(loaded.splits[split]["label"])
    return [counts[index] for index in range(len(loaded.label_names))]


# ---------------------------------------------------------------- CLMLF folders


def test_clmlf_folder_reads_splits_images_and_mvsa_names(tmp_path):
    folder = write_clmlf_folder(tmp_path, {"train": clmlf_items([0, 1, 2, 0]), "dev": clmlf_items([2, 1], "d"), "test": clmlf_items([0], "t")})
    loaded = load_clmlf_folder(folder)
    assert list(loaded.splits) == ["train", "validation", "test"]
    assert loaded.label_names == MVSA_NAMES
    train = loaded.splits["train"]
    assert train.column_names == ["id", "text", "image", "label"]
    assert train["id"] == ["0", "1", "2", "3"] and train["label"] == [0, 1, 2, 0]
    assert train.features["label"].names == MVSA_NAMES
    assert all(Path(path).is_file() and Path(path).is_absolute() for path in train["image"])
    assert Path(loaded.splits["validation"][0]["image"]).name == "d0.jpg"
    assert loaded.report["rows"] == {"train": 4, "validation": 2, "test": 1}


def test_clmlf_valid_json_dataset_image_folder_and_hfm_names(tmp_path):
    # Labels 0 and 1 alone fit HFM and MVSA without its negative class: the folder's name tells them apart.
    folder = write_clmlf_folder(tmp_path / "hfm", {"train": clmlf_items([0, 1]), "valid": clmlf_items([1], "v")}, image_folder="dataset_image")
    loaded = load_clmlf_folder(folder)
    assert list(loaded.splits) == ["train", "validation"]
    assert loaded.label_names == HFM_NAMES
    assert "dataset_image" in loaded.splits["validation"][0]["image"]


def test_clmlf_explicit_label_names_and_out_of_range_label(tmp_path):
    folder = write_clmlf_folder(tmp_path, {"train": clmlf_items([0, 1, 1])})
    assert load_clmlf_folder(folder, label_names=["a", "b", "c"]).label_names == ["a", "b", "c"]
    with pytest.raises(ValueError) as error:
        load_clmlf_folder(folder, label_names=["only"])
    message = str(error.value)
    assert "train.json" in message and "item 1" in message and "'1'" in message and "['only']" in message


def test_clmlf_unknown_label_names_file_row_id_and_allowed_labels(tmp_path):
    items = clmlf_items([0, 1])
    items[1]["emotion_label"] = 7
    folder = write_clmlf_folder(tmp_path, {"train": items})
    with pytest.raises(ValueError) as error:
        load_clmlf_folder(folder)
    message = str(error.value)
    assert str(folder / "train.json") in message and "item 1" in message and "id '1'" in message and "7" in message
    assert "0..2" in message and "label_names" in message


def test_clmlf_empty_text_names_file_row_and_id(tmp_path):
    items = clmlf_items([0, 1, 2])
    items[2]["text"] = "   "
    folder = write_clmlf_folder(tmp_path, {"dev": items})
    with pytest.raises(ValueError, match="empty") as error:
        load_clmlf_folder(folder)
    assert str(folder / "dev.json") in str(error.value) and "item 2" in str(error.value) and "id '2'" in str(error.value)


def test_clmlf_non_utf8_text_is_read_not_dropped(tmp_path):
    folder = write_clmlf_folder(tmp_path, {"train": clmlf_items([0, 1, 2])})
    raw = (folder / "train.json").read_bytes().replace(b"tweet number 1", b"caf\xe9 \xff tweet \xf0\x9f\x98\x80")
    (folder / "train.json").write_bytes(raw)
    loaded = load_clmlf_folder(folder)
    assert loaded.splits["train"]["text"][1] == "caf\ufffd \ufffd tweet \U0001f600"
    assert len(loaded.splits["train"]) == 3
    assert loaded.report["undecodable_files"] == [str(folder / "train.json")]


def test_clmlf_text_only_folder_needs_require_images_false(tmp_path):
    folder = write_clmlf_folder(tmp_path, {"train": clmlf_items([0, 2])}, image_folder=None)
    with pytest.raises(FileNotFoundError) as error:
        load_clmlf_folder(folder)
    assert str(folder) in str(error.value) and "images/" in str(error.value) and "require_images=False" in str(error.value)
    loaded = load_clmlf_folder(folder, require_images=False)
    assert loaded.splits["train"]["image"] == [None, None]
    assert loaded.report["text_only"] and loaded.report["blanked"] == {"train": 0}


def test_clmlf_missing_folder_and_split_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_clmlf_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="train.json"):
        load_clmlf_folder(tmp_path / "empty")
    both = write_clmlf_folder(tmp_path / "both", {"dev": clmlf_items([0]), "valid": clmlf_items([0])})
    with pytest.raises(ValueError, match="dev.json"):
        load_clmlf_folder(both)


def break_images(folder: Path) -> tuple[Path, Path]:
    """Delete image 1 and replace image 2 by bytes PIL cannot read."""
    missing, corrupt = folder / "images" / "1.jpg", folder / "images" / "2.jpg"
    missing.unlink()
    corrupt.write_bytes(b"this is not a jpeg")
    return missing, corrupt


def test_missing_and_corrupt_images_raise_naming_id_and_path(tmp_path):
    folder = write_clmlf_folder(tmp_path, {"train": clmlf_items([0, 1, 2, 0])})
    missing, corrupt = break_images(folder)
    with pytest.raises(ValueError) as error:
        load_clmlf_folder(folder)
    message = str(error.value)
    assert "2 image(s)" in message and "id '1'" in message and str(missing) in message
    assert "id '2'" in message and str(corrupt) in message and "missing_image='skip'" in message


def test_skip_and_blank_modes_count_and_log(tmp_path, caplog):
    folder = write_clmlf_folder(tmp_path, {"train": clmlf_items([0, 1, 2, 0]), "dev": clmlf_items([1], "d")})
    break_images(folder)
    with caplog.at_level(logging.WARNING, logger="modeling_sppscl.data.readers"):
        skipped = load_clmlf_folder(folder, missing_image="skip")
    assert skipped.splits["train"]["id"] == ["0", "3"]
    assert skipped.report["skipped"] == {"train": 2, "validation": 0} and skipped.report["rows"]["train"] == 2
    assert "2 of 4 pairs" in caplog.text and "dropped" in caplog.text
    blanked = load_clmlf_folder(folder, missing_image="blank")
    assert blanked.splits["train"]["id"] == ["0", "1", "2", "3"]
    images = blanked.splits["train"]["image"]
    assert images[1] is None and images[2] is None and images[0] is not None
    assert blanked.report["blanked"] == {"train": 2, "validation": 0} and blanked.report["skipped"] == {"train": 0, "validation": 0}
    with pytest.raises(ValueError, match="missing_image"):
        load_clmlf_folder(folder, missing_image="ignore")


def test_truncated_jpeg_is_caught_only_when_pixels_are_verified(tmp_path):
    folder = write_clmlf_folder(tmp_path / "mvsa", {"train": clmlf_items([0, 1])})
    path = folder / "images" / "1.jpg"
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    PIL.Image.fromarray(noise).save(path, format="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert len(load_clmlf_folder(folder).splits["train"]) == 2
    with pytest.raises(ValueError, match="id '1'"):
        load_clmlf_folder(folder, verify_pixels=True)


# ---------------------------------------------------------------- HFM text files


def write_hfm_files(folder: Path) -> tuple[Path, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    train = folder / "train.txt"
    train.write_text("['101', 'so great to wait an hour', 1]\n['102', 'nice sunny day', 0]\n\n", encoding="utf-8")
    valid = folder / "valid.txt"
    # The hashtag label (third) disagrees with the human label (last): the last one counts.
    valid.write_text("['201', 'love mondays', 0, 1]\n['202', 'a cat', 1, 0]\n", encoding="utf-8")
    test = folder / "test.txt"
    test.write_bytes(b"['301', 'na\xefve tweet', 0, 0]\n")
    return train, valid, test


def test_hfm_text_files_use_the_last_label_and_read_non_utf8(tmp_path):
    train, valid, test = write_hfm_files(tmp_path / "hfm")
    loaded = load_hfm_text_files(train, valid, test)
    assert loaded.label_names == HFM_NAMES
    assert loaded.splits["train"]["label"] == [1, 0] and loaded.splits["train"]["id"] == ["101", "102"]
    assert loaded.splits["validation"]["label"] == [1, 0]
    assert loaded.splits["test"]["text"] == ["na\ufffdve tweet"]
    assert loaded.splits["train"]["image"] == [None, None] and loaded.report["text_only"]
    assert loaded.report["undecodable_files"] == [str(test)]


def test_hfm_text_files_with_images_and_a_missing_one(tmp_path):
    train, valid, _ = write_hfm_files(tmp_path / "hfm")
    for row_id in ("101", "102", "201"):
        write_jpeg(tmp_path / "images" / f"{row_id}.jpg")
    with pytest.raises(ValueError) as error:
        load_hfm_text_files(train, valid, image_dir=tmp_path / "images")
    assert "id '202'" in str(error.value) and str(tmp_path / "images" / "202.jpg") in str(error.value)
    loaded = load_hfm_text_files(train, valid, image_dir=tmp_path / "images", missing_image="skip")
    assert loaded.splits["validation"]["id"] == ["201"] and loaded.report["skipped"] == {"train": 0, "validation": 1}


def test_hfm_text_files_errors_name_file_and_line(tmp_path):
    train, _, _ = write_hfm_files(tmp_path / "hfm")
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        load_hfm_text_files(train, tmp_path / "absent.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("['1', 'fine', 0]\n['2', '', 1]\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 2 \(id '2'\): the text is empty"):
        load_hfm_text_files(bad)
    bad.write_text("['1', 'fine', 0]\n['2', 'fine', 5]\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 2 \(id '2'\): unknown label 5; allowed labels: ids 0..1"):
        load_hfm_text_files(bad)
    bad.write_text("['1', 'fine', 0]\nnot a list\n")
    with pytest.raises(ValueError, match="bad.txt, line 2"):
        load_hfm_text_files(bad)


# ---------------------------------------------------------------- CSV and JSON Lines


def write_csv(path: Path, rows: list[list[str]], header: tuple[str, ...] = ("image", "text", "label")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [",".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_resolves_relative_images_and_maps_string_labels(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_jpeg(tmp_path / "data" / "pics" / name)
    train = write_csv(tmp_path / "data" / "train.csv", [["pics/a.jpg", "hello there", "sad"], ["pics/b.jpg", "good day", "happy"]])
    dev = write_csv(tmp_path / "data" / "dev.csv", [["pics/c.jpg", "meh", "calm"]])
    # Issue 10: the training split fixes the label set; a validation label it lacks is refused, not added.
    with pytest.raises(ValueError, match=r"dev.csv, line 2 \(id 'validation-0'\): unknown label 'calm'.*--class_names"):
        load_csv_or_jsonl(train_file=train, validation_file=dev)
    loaded = load_csv_or_jsonl(train_file=train, validation_file=dev, label_names=["calm", "happy", "sad"])
    assert loaded.label_names == ["calm", "happy", "sad"]
    assert loaded.splits["train"]["label"] == [2, 1] and loaded.splits["validation"]["label"] == [0]
    assert loaded.splits["train"]["image"][0] == str((tmp_path / "data" / "pics" / "a.jpg").resolve())
    assert loaded.splits["train"]["id"] == ["train-0", "train-1"]
    explicit = load_csv_or_jsonl(train_file=train, label_names=["happy", "sad"])
    assert explicit.splits["train"]["label"] == [1, 0]


def test_csv_integer_labels_id_column_and_errors(tmp_path):
    write_jpeg(tmp_path / "a.jpg")
    path = write_csv(tmp_path / "train.csv", [["x1", "a.jpg", "first", "2"], ["x2", "a.jpg", "second", "0"]], header=("key", "image", "text", "label"))
    loaded = load_csv_or_jsonl(train_file=path, id_column="key")
    assert loaded.label_names == ["0", "1", "2"] and loaded.splits["train"]["label"] == [2, 0]
    assert loaded.splits["train"]["id"] == ["x1", "x2"]
    with pytest.raises(ValueError) as error:
        load_csv_or_jsonl(train_file=path, id_column="key", label_names=["no", "yes"])
    assert f"{path}, line 2 (id 'x1'): unknown label '2'" in str(error.value) and "['no', 'yes']" in str(error.value)
    with pytest.raises(ValueError, match=r"train.csv, line 2: no image column 'picture'.*image_column=None"):
        load_csv_or_jsonl(train_file=path, image_column="picture")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_csv_or_jsonl(train_file=tmp_path / "missing.csv")


def test_csv_empty_text_and_empty_image_path(tmp_path):
    write_jpeg(tmp_path / "a.jpg")
    path = write_csv(tmp_path / "train.csv", [["a.jpg", "fine", "x"], ["", "no picture", "y"], ["a.jpg", " ", "x"]])
    with pytest.raises(ValueError, match=r"train.csv, line 4 \(id 'train-2'\): the text is empty"):
        load_csv_or_jsonl(train_file=path)
    write_csv(path, [["a.jpg", "fine", "x"], ["", "no picture", "y"]])
    with pytest.raises(ValueError, match=r"line 3 \(id 'train-1'\): no image given"):
        load_csv_or_jsonl(train_file=path)
    blanked = load_csv_or_jsonl(train_file=path, missing_image="blank")
    assert blanked.splits["train"]["image"][1] is None and blanked.report["blanked"] == {"train": 1}


def test_jsonl_and_json_list_files(tmp_path):
    write_jpeg(tmp_path / "img" / "1.jpg")
    rows = [{"id": 7, "text": "first", "label": 1, "image": "img/1.jpg"}, {"id": 8, "text": "second", "label": 0, "image": "img/1.jpg"}]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_bytes(b"\n".join(json.dumps(row).encode() for row in rows) + b"\n" + b'{"id": 9, "text": "\xe9t\xe9", "label": 1, "image": "img/1.jpg"}\n')
    json_list = write_json(tmp_path / "test.json", rows)
    loaded = load_csv_or_jsonl(train_file=jsonl, test_file=json_list, label_names=["neg", "pos"])
    assert loaded.splits["train"]["id"] == ["7", "8", "9"] and loaded.splits["train"]["label"] == [1, 0, 1]
    assert loaded.splits["train"]["text"][2] == "\ufffdt\ufffd" and loaded.report["undecodable_files"] == [str(jsonl)]
    assert loaded.splits["test"]["label"] == [1, 0]
    text_only = load_csv_or_jsonl(train_file=jsonl, image_column=None)
    assert text_only.splits["train"]["image"] == [None, None, None]
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "text": "a", "label": 0, "image": "img/1.jpg"}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl, line 2"):
        load_csv_or_jsonl(train_file=tmp_path / "bad.jsonl")


# ---------------------------------------------------------------- datasets datasets


def test_saved_dataset_with_path_column_and_class_labels(tmp_path):
    folder = tmp_path / "saved"
    write_jpeg(folder / "images" / "a.jpg")
    features = datasets.Features({"picture": datasets.Value("string"), "sentence": datasets.Value("string"), "y": datasets.ClassLabel(names=["no", "yes"])})
    dataset = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"picture": ["images/a.jpg", "images/a.jpg"], "sentence": ["one", "two"], "y": [1, 0]}, features=features),
            "dev": datasets.Dataset.from_dict({"picture": ["images/gone.jpg"], "sentence": ["three"], "y": [1]}, features=features),
        }
    )
    dataset.save_to_disk(str(folder))
    with pytest.raises(ValueError, match="split validation, row 0 .*gone.jpg"):
        load_datasets_dataset(str(folder), image_column="picture", text_column="sentence", label_column="y")
    loaded = load_datasets_dataset(str(folder), image_column="picture", text_column="sentence", label_column="y", missing_image="skip")
    assert loaded.label_names == ["no", "yes"] and list(loaded.splits) == ["train", "validation"]
    assert loaded.splits["train"]["image"][0] == str((folder / "images" / "a.jpg").resolve())
    assert len(loaded.splits["validation"]) == 0 and loaded.report["skipped"] == {"train": 0, "validation": 1}
    with pytest.raises(ValueError, match="differ"):
        load_datasets_dataset(str(folder), image_column="picture", text_column="sentence", label_column="y", label_names=["a", "b"])


def test_saved_dataset_with_image_feature_keeps_pil_images(tmp_path):
    images = [PIL.Image.new("RGB", (6, 5), (255, 0, 0)), None, PIL.Image.new("RGB", (4, 4), (0, 0, 255))]
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string"), "label": datasets.Value("int64")})
    dataset = datasets.Dataset.from_dict({"image": images, "text": ["red", "nothing", "blue"], "label": [0, 1, 1]}, features=features)
    dataset.save_to_disk(str(tmp_path / "single"))
    loaded = load_datasets_dataset(str(tmp_path / "single"), missing_image="blank")
    train = loaded.splits["train"]
    assert isinstance(train.features["image"], datasets.Image)
    assert train[0]["image"].size == (6, 5) and train[1]["image"] is None and train[2]["image"].getpixel((0, 0)) == (0, 0, 255)
    assert loaded.label_names == ["0", "1"] and train["id"] == ["train-0", "train-1", "train-2"]
    assert loaded.report["blanked"] == {"train": 1}
    with pytest.raises(ValueError, match="no column 'words'"):
        load_datasets_dataset(str(tmp_path / "single"), text_column="words")


# ---------------------------------------------------------------- images


def test_load_image_accepts_paths_pil_arrays_and_bytes(tmp_path):
    path = write_jpeg(tmp_path / "a.jpg", size=5)
    array = np.zeros((3, 4, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL.Image.new("L", (2, 2)).save(buffer, format="PNG")
    for image in (path, str(path), PIL.Image.new("L", (5, 5)), array, buffer.getvalue()):
        loaded = load_image(image)
        assert isinstance(loaded, PIL.Image.Image) and loaded.mode == "RGB"
    with pytest.raises(ValueError, match="gone.jpg"):
        load_image(tmp_path / "gone.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.jpg"):
        load_image(tmp_path / "bad.jpg")


def test_blank_image():
    image = blank_image()
    assert image.size == (224, 224) and image.mode == "RGB" and image.getextrema() == ((0, 0), (0, 0), (0, 0))
    assert blank_image((32, 16)).size == (32, 16)


# ---------------------------------------------------------------- the real data


def test_real_mvsa_single_with_images():
    loaded = load_clmlf_folder(real_data_folder("mvsa_single"))
    assert loaded.label_names == MVSA_NAMES
    assert {split: len(part) for split, part in loaded.splits.items()} == {"train": 3611, "validation": 450}
    assert label_counts(loaded, "train") == [2147, 376, 1088]
    assert label_counts(loaded, "validation") == [268, 47, 135]
    assert all(Path(path).is_file() for path in loaded.splits["validation"]["image"])
    assert load_image(loaded.splits["validation"][0]["image"]).mode == "RGB"


def test_real_mvsa_multiple_text_only():
    folder = real_data_folder("mvsa_multiple")
    with pytest.raises(FileNotFoundError, match="require_images=False"):
        load_clmlf_folder(folder)
    loaded = load_clmlf_folder(folder, require_images=False)
    assert {split: len(part) for split, part in loaded.splits.items()} == {"train": 13624, "validation": 1700, "test": 1700}
    assert loaded.label_names == MVSA_NAMES and set(loaded.splits["test"]["image"]) == {None}


def test_real_hfm_text_only():
    loaded = load_clmlf_folder(real_data_folder("hfm"), require_images=False)
    assert {split: len(part) for split, part in loaded.splits.items()} == {"train": 19816, "validation": 2410, "test": 2409}
    assert loaded.label_names == HFM_NAMES
