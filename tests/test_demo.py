"""The synthetic demo set: deterministic, balanced, and a label that needs both text and image."""

import collections

import numpy as np
import pytest

from modeling_sppscl.data.demo import (
    DEMO_LABEL_NAMES,
    DEMO_MAX_TOKENS,
    DEMO_VOCAB,
    DEMO_VOCAB_SIZE,
    IMAGE_CLASS_COLOURS,
    NEUTRAL_COLOUR,
    TEXT_CLASS_WORDS,
    build_demo_tokenizer,
    load_demo_data,
    make_demo_dataset,
)


SIZES = {"num_train": 270, "num_validation": 45, "num_test": 36}


@pytest.fixture(scope="module")
def demo():
    return make_demo_dataset(**SIZES, seed=3)


def text_class(text: str) -> int | None:
    """The class of the cue word in the text (None for a neutral text)."""
    classes = [index for index, words in enumerate(TEXT_CLASS_WORDS) for word in text.split() if word in words]
    assert len(classes) <= 1, text
    return classes[0] if classes else None


def image_class(image) -> int | None:
    """The colour nearest to the image's per-channel median (the distractor covers under half of it); None: grey."""
    median = np.median(np.asarray(image, dtype=np.float32).reshape(-1, 3), axis=0)
    colours = np.vstack([IMAGE_CLASS_COLOURS, NEUTRAL_COLOUR])
    nearest = int(np.argmin(np.linalg.norm(colours - median, axis=1)))
    return None if nearest == len(IMAGE_CLASS_COLOURS) else nearest


def decoded(split) -> list[tuple[int, int, int]]:
    return [(text_class(row["text"]), image_class(row["image"]), row["label"]) for row in split]


def test_splits_columns_and_sizes(demo):
    assert {name: len(part) for name, part in demo.items()} == {"train": 270, "validation": 45, "test": 36}
    assert demo["train"].column_names == ["id", "text", "image", "label"]
    assert demo["train"].features["label"].names == DEMO_LABEL_NAMES
    row = demo["validation"][0]
    assert row["id"] == "demo-validation-00000" and row["image"].mode == "RGB" and row["image"].size == (32, 32)
    assert list(make_demo_dataset(num_train=9, num_validation=0, num_test=0)) == ["train"]
    assert make_demo_dataset(num_train=9, num_validation=0, num_test=0, image_size=20)["train"][0]["image"].size == (20, 20)


def test_same_seed_same_data_other_seed_other_data(demo):
    again = make_demo_dataset(**SIZES, seed=3)
    for name in demo:
        assert demo[name]["text"] == again[name]["text"] and demo[name]["label"] == again[name]["label"]
        assert [np.asarray(image).tobytes() for image in demo[name]["image"]] == [np.asarray(image).tobytes() for image in again[name]["image"]]
    assert make_demo_dataset(**SIZES, seed=4)["train"]["text"] != demo["train"]["text"]
    # Each split has its own generator: resizing train leaves validation as it was.
    assert make_demo_dataset(num_train=9, num_validation=45, num_test=0, seed=3)["validation"]["text"] == demo["validation"]["text"]


def test_labels_are_balanced(demo):
    for name, part in demo.items():
        counts = collections.Counter(part["label"])
        assert max(counts.values()) - min(counts.values()) <= 1, (name, counts)


def test_exactly_one_modality_carries_the_label_and_neither_alone_reaches_high_accuracy(demo):
    rows = decoded(demo["train"])
    for text, image, label in rows:
        assert (text is None) != (image is None)
        assert label == (text if text is not None else image)
    for position in (0, 1):
        # The best one-modality rule: the cue where there is one, a guess (right a third of the time) elsewhere.
        carried = sum(row[position] is not None for row in rows)
        best_accuracy = (carried + (len(rows) - carried) / 3) / len(rows)
        assert best_accuracy == pytest.approx(2 / 3)
        neutral = collections.Counter(row[2] for row in rows if row[position] is None)
        # 270 pairs cycle through the six combinations: every label 45 times where this modality is neutral.
        assert [neutral[label] for label in range(3)] == [45, 45, 45]


def test_text_lengths_vary_and_fit_the_demo_towers(demo):
    lengths = [len(text.split()) for text in demo["train"]["text"]]
    assert min(lengths) <= 3 and max(lengths) >= 30
    tokenizer = build_demo_tokenizer()
    encoded = tokenizer(list(demo["train"]["text"]))["input_ids"]
    assert max(len(ids) for ids in encoded) <= DEMO_MAX_TOKENS
    assert all(tokenizer.unk_token_id not in ids for ids in encoded)


def test_demo_tokenizer_is_small_lowercasing_and_complete():
    tokenizer = build_demo_tokenizer()
    assert tokenizer.vocab_size == DEMO_VOCAB_SIZE == len(DEMO_VOCAB) <= 128
    assert [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id] == [0, 1, 2, 3, 4]
    assert tokenizer("APPLE Plum")["input_ids"] == tokenizer("apple plum")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("apple zebra")["input_ids"]) == ["[CLS]", "apple", "[UNK]", "[SEP]"]


def test_load_demo_data_gives_label_names():
    loaded = load_demo_data(num_train=18, num_validation=9, num_test=0)
    assert loaded.label_names == DEMO_LABEL_NAMES and list(loaded.splits) == ["train", "validation"]
    assert loaded.report["rows"] == {"train": 18, "validation": 9}
