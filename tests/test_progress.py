"""Progress of the long stages: feature extraction and the image checks announce themselves in one log line and
show a progress bar with the count and the rate, which `--disable_tqdm` (transformers' switch) silences."""

import logging
import re

import pytest
import transformers

from helpers_data import write_clmlf_folder, clmlf_items
from modeling_sppscl.data.feature_cache import extract_features
from modeling_sppscl.data.readers import load_clmlf_folder
from test_feature_cache import make_rows

from conftest import tiny_model, tiny_processor


@pytest.fixture
def progress_bars():
    """Bars on for the test (an in-process run with --disable_tqdm may have turned them off), as they were after."""
    was_on = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.enable_progress_bar()
    yield
    if not was_on:
        transformers.utils.logging.disable_progress_bar()


def final_bar(stderr: str, description: str) -> str:
    """The last state of the bar labelled `description` (tqdm redraws it after each carriage return)."""
    states = [part for part in re.split(r"[\r\n]", stderr) if part.startswith(description)]
    assert states, stderr
    return states[-1]


def test_extraction_announces_itself_and_counts_the_pairs(tmp_path, progress_bars, capfd, caplog):
    rows = make_rows(tmp_path, count=7)
    model, processor = tiny_model(), tiny_processor(tmp_path / "tokenizer")
    with caplog.at_level(logging.INFO, logger="modeling_sppscl"):
        extract_features(model, processor, rows, cache_dir=tmp_path / "cache", batch_size=3, device="cpu", split="train")
    bar = final_bar(capfd.readouterr().err, "Extracting frozen-tower features (train)")
    # Every pair counted, in three batches (3 + 3 + 1), with a rate.
    assert re.search(r"\b7/7\b", bar) and re.search(r"pair/s|s/pair", bar), bar
    assert "Extracting frozen-tower features (train): the text and vision tower(s) over 7 pairs on cpu (float32, batches of 3)" in caplog.messages

    transformers.utils.logging.disable_progress_bar()
    extract_features(model, processor, rows, cache_dir=tmp_path / "other_cache", batch_size=3, device="cpu", split="train")
    assert "Extracting frozen-tower features" not in capfd.readouterr().err


def test_image_checks_announce_themselves_and_count_the_images(tmp_path, progress_bars, capfd, caplog):
    folder = write_clmlf_folder(tmp_path / "data", {"train": clmlf_items([0, 1, 2, 0, 1]), "dev": clmlf_items([2, 1], "d")})
    with caplog.at_level(logging.INFO, logger="modeling_sppscl"):
        load_clmlf_folder(folder, verify_pixels=True)
    err = capfd.readouterr().err
    assert re.search(r"\b5/5\b", final_bar(err, "Checking images (train)"))
    assert re.search(r"\b2/2\b.*(image/s|s/image)", final_bar(err, "Checking images (validation)"))
    assert "Checking images (train): 5 images, decoding each at reduced size" in caplog.messages

    transformers.utils.logging.disable_progress_bar()
    load_clmlf_folder(folder, verify_pixels=True)
    assert "Checking images" not in capfd.readouterr().err
