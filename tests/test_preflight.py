"""The checks before training (modeling_sppscl.data.preflight) and run_sppscl.py's data loading: bad inputs are
refused before any tower or training step runs, in one message naming file, row, id and the fix."""

import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
from transformers import RobertaConfig, RobertaModel

from modeling_sppscl import SppSclProcessor
from modeling_sppscl.data.preflight import check_before_training, check_output_dir, text_tower_limit
from modeling_sppscl.data.readers import load_csv_or_jsonl
from tests.helpers_data import clmlf_items, write_clmlf_folder

from conftest import TINY_WORDS, tiny_bert_config, tiny_image_processor, tiny_model, tiny_tokenizer


REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
import run_sppscl  # noqa: E402

# Visible characters that the tiny BERT tokenizer drops (accent stripping): no token but the special ones.
TOKENLESS_TEXT = "\u0301\u0301"


def run_args(do_train=True, do_eval=True, do_predict=False):
    return SimpleNamespace(do_train=do_train, do_eval=do_eval, do_predict=do_predict)


def text_data(tmp_path, train_texts: list[str], dev_texts: list[str] | None = None):
    files = {}
    for split, texts in (("train", train_texts), ("validation", dev_texts)):
        if texts is not None:
            rows = [{"id": f"{split[0]}{index}", "text": text, "label": index % 2} for index, text in enumerate(texts)]
            files[split] = tmp_path / f"{split}.jsonl"
            files[split].write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return load_csv_or_jsonl(train_file=files["train"], validation_file=files.get("validation"), image_column=None)


@pytest.fixture
def model_and_processor(tmp_path):
    model = tiny_model()
    return model, SppSclProcessor.for_config(model.config, tiny_image_processor(), tiny_tokenizer(tmp_path / "tok"))


def test_token_less_text_is_refused_naming_file_row_and_id(tmp_path, model_and_processor):
    loaded = text_data(tmp_path, ["good day", "bad day"], ["fine", TOKENLESS_TEXT, "the cat"])
    with pytest.raises(ValueError) as error:
        check_before_training(loaded, *model_and_processor, run_args(), {})
    message = str(error.value)
    assert f"{tmp_path / 'validation.jsonl'}, row 1 (id 'v1')" in message and "no token the tokenizer knows" in message
    assert "--empty_text skip" in message


def test_token_less_text_is_dropped_and_reported_with_skip(tmp_path, model_and_processor):
    loaded = text_data(tmp_path, ["good day", "bad day"], ["fine", TOKENLESS_TEXT, "the cat"])
    splits = check_before_training(loaded, *model_and_processor, run_args(), {}, empty_text="skip", report_dir=str(tmp_path))
    assert splits["validation"]["id"] == ["v0", "v2"] and splits["train"]["id"] == ["t0", "t1"]
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert report["splits"]["validation"]["dropped_for_text"] == 1 and report["splits"]["validation"]["pairs"] == 2


@pytest.mark.parametrize("text", ["\u200b\u200b", "\x00", "\ufffd \ufffd", " \n\t"])
def test_texts_without_visible_characters_are_refused_by_the_reader(tmp_path, text):
    """The serving rule (`text_problems`) at reading time: these reach no tokenizer."""
    with pytest.raises(ValueError, match=r"validation.jsonl, line 2 \(id 'v1'\): the text is empty or has only invisible characters"):
        text_data(tmp_path, ["good day", "bad day"], ["fine", text])


def test_requested_splits_must_be_there_and_hold_pairs(tmp_path, model_and_processor):
    loaded = text_data(tmp_path, ["good day", "bad day"])
    with pytest.raises(ValueError) as error:
        check_before_training(loaded, *model_and_processor, run_args(do_eval=True, do_predict=True), {})
    message = str(error.value)
    assert "--do_eval (set by --eval_strategy too) needs a validation split" in message and "--validation_file" in message
    assert "--do_predict needs a test split" in message and "--test_file" in message  # both problems in one message
    with pytest.raises(ValueError, match="--do_train needs pairs in the train split.*limit 0"):
        check_before_training(loaded, *model_and_processor, run_args(do_eval=False), {"train": 0})
    assert list(check_before_training(loaded, *model_and_processor, run_args(do_eval=False), {})) == ["train"]


def test_empty_dev_split_is_refused_for_do_eval(tmp_path, model_and_processor):
    loaded = text_data(tmp_path, ["good day", "bad day"], [])
    with pytest.raises(ValueError, match="--do_eval needs pairs in the validation split"):
        check_before_training(loaded, *model_and_processor, run_args(), {})


def test_texts_are_capped_at_the_text_towers_positions(tmp_path):
    model = tiny_model(text_config=tiny_bert_config().__class__(**{**tiny_bert_config().to_dict(), "max_position_embeddings": 16}))
    processor = SppSclProcessor.for_config(model.config, tiny_image_processor(), tiny_tokenizer(tmp_path / "tok"))
    assert processor.text_max_length == 202
    loaded = text_data(tmp_path, [" ".join(TINY_WORDS * 3), "bad day"])
    check_before_training(loaded, model, processor, run_args(do_eval=False), {}, report_dir=str(tmp_path))
    assert processor.text_max_length == 16
    assert json.loads((tmp_path / "data_report.json").read_text())["splits"]["train"]["texts_truncated_to_16_tokens"] == 1
    encoded = processor.tokenize([" ".join(TINY_WORDS * 3)])
    model.eval()
    model.text_model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])  # fits: no index error


def test_paper_variant_refused_when_the_tower_cannot_take_202_tokens(tmp_path):
    model = tiny_model("paper", text_config=tiny_bert_config().__class__(**{**tiny_bert_config().to_dict(), "max_position_embeddings": 64}))
    processor = SppSclProcessor.for_config(model.config, tiny_image_processor(), tiny_tokenizer(tmp_path / "tok"))
    loaded = text_data(tmp_path, ["good day", "bad day"])
    with pytest.raises(ValueError, match=r"'paper' variant pads every text to 202 tokens.*at most 64 \(max_position_embeddings 64\).*--variant default"):
        check_before_training(loaded, model, processor, run_args(do_eval=False), {})


def test_roberta_towers_lose_their_padding_offset(tmp_path):
    config = RobertaConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                           max_position_embeddings=66, pad_token_id=1)
    model = SimpleNamespace(config=SimpleNamespace(text_config=config), text_model=RobertaModel(config))
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    assert text_tower_limit(model, tokenizer) == (64, "max_position_embeddings 66 minus the position offset 2")
    tokenizer.model_max_length = 32
    assert text_tower_limit(model, tokenizer)[0] == 32


def test_output_dir_must_be_writable(tmp_path):
    check_output_dir(str(tmp_path / "new" / "out"))
    assert (tmp_path / "new" / "out").is_dir() and not list((tmp_path / "new" / "out").iterdir())
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match=r"--output_dir .*a_file/out is not writable .*pass a folder you can write to"):
        check_output_dir(str(tmp_path / "a_file" / "out"))


def test_text_only_data_reports_every_pair_blank(tmp_path, model_and_processor, caplog):
    loaded = text_data(tmp_path, ["good day", "bad day"])
    check_before_training(loaded, *model_and_processor, run_args(do_eval=False), {}, report_dir=str(tmp_path))
    assert json.loads((tmp_path / "data_report.json").read_text())["splits"]["train"]["blank_image"] == 2
    assert "every pair gets a blank image" in caplog.text


# ---------------------------------------------------------------- run_sppscl.py's data loading


def data_arguments(**kwargs):
    return run_sppscl.DataArguments(**kwargs)


def truncated_image_folder(tmp_path):
    folder = write_clmlf_folder(tmp_path / "mvsa", {"train": clmlf_items([0, 1, 2])}, image_folder="Images")
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(noise).save(buffer, format="JPEG")
    (folder / "Images" / "2.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # the header intact
    return folder


@pytest.mark.parametrize("cached", [True, False])
def test_truncated_files_meet_the_policy_at_their_one_decode(cached, tmp_path):
    """load_data reads headers; the one decode (the vision tower's extraction, or the check before training
    without a vision cache) meets --missing_image: refused naming the id, skipped or blanked and counted."""
    from run_sppscl import prepare_splits

    from modeling_sppscl.training.trainer import SppSclTrainingArguments
    from test_feature_cache import one_thread  # noqa: F401

    folder = truncated_image_folder(tmp_path)
    model = tiny_model("default", freeze_vision_model=cached)
    processor = SppSclProcessor.for_config(model.config, tiny_image_processor(), tiny_tokenizer(tmp_path / "tok"))
    args = SimpleNamespace(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True)
    args = SppSclTrainingArguments(**vars(args))

    def prepared(missing_image):
        data_args = data_arguments(data_dir=str(folder), missing_image=missing_image, feature_cache_dir=str(tmp_path / "cache"))
        loaded = run_sppscl.load_data(data_args, seed=0)
        splits, _ = prepare_splits(dict(loaded.splits), data_args, model, processor, args, loaded.report)
        return splits["train"], loaded.report

    data_args = data_arguments(data_dir=str(folder))
    assert run_sppscl.load_data(data_args, seed=0).report["skipped"] == {"train": 0}  # headers only: nothing seen yet
    with pytest.raises(ValueError, match="(?i)id '2'.*truncated"):
        prepared("error")
    skipped, report = prepared("skip")
    assert list(skipped["id"]) == ["0", "1"] and report["skipped"] == {"train": 1} and report["rows"]["train"] == 2
    blanked, report = prepared("blank")
    assert len(blanked) == 3 and report["blanked"] == {"train": 1} and not report["text_only"]
    if cached:  # the truncated image's features are the blank image's
        blank = model.vision_tower_features(processor.preprocess_images([PIL.Image.new("RGB", (224, 224))], return_tensors="pt")["pixel_values"])
        np.testing.assert_allclose(blanked["image_features"][2], blank[0].detach().numpy(), rtol=0, atol=1e-5)  # batch rounding
    else:
        assert blanked["image"][2] is None and blanked["image"][0].endswith("Images/0.jpg")


def test_load_data_takes_the_label_set_of_the_checkpoint(tmp_path):
    model = tiny_model(id2label={0: "neg", 1: "pos", 2: "other"})
    model.save_pretrained(tmp_path / "model")
    test = tmp_path / "test.csv"
    test.write_text("text,label\ngood,pos\nbad,neg\n")
    loaded = run_sppscl.load_data(data_arguments(test_file=str(test), image_column=None), seed=0, model_name_or_path=str(tmp_path / "model"))
    assert loaded.label_names == ["neg", "pos", "other"] and loaded.splits["test"]["label"] == [1, 0]


@pytest.mark.slow
def test_run_refuses_bad_data_before_any_tower_runs(tmp_path):
    """Through the script: a token-less dev text is refused before any tower runs (a missing test split is refused
    earlier still, before the towers load: test_a_data_error_is_reported_before_any_tower_loads)."""
    folder = tmp_path / "mvsa"
    items = clmlf_items([0, 1, 2, 0])
    for item in items:
        item["text"] = "good movie"
    dev = clmlf_items([1, 2], "d")
    dev[1]["text"] = TOKENLESS_TEXT
    write_clmlf_folder(folder, {"train": items, "dev": dev})
    for item in items + dev:
        item["text"] = "good movie"
    towers = tmp_path / "towers"
    from transformers import BertModel, ResNetModel

    from conftest import tiny_resnet_config

    BertModel(tiny_bert_config()).save_pretrained(towers / "text")
    tiny_tokenizer(towers / "tok").save_pretrained(towers / "text")
    ResNetModel(tiny_resnet_config()).save_pretrained(towers / "vision")
    tiny_image_processor().save_pretrained(towers / "vision")
    output = tmp_path / "out"
    env = {"PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin",
           "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run_sppscl.py"), "--data_dir", str(folder), "--text_model_name_or_path", str(towers / "text"),
         "--vision_model_name_or_path", str(towers / "vision"), "--output_dir", str(output), "--do_train", "--do_eval",
         "--report_to", "none"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode != 0
    assert f"{folder / 'dev.json'}, row 1 (id 'd1')" in result.stderr and "--empty_text skip" in result.stderr
    # Refused before any tower ran: no feature cache (it lives under the datasets cache), no checkpoint.
    assert not (tmp_path / "cache" / "sppscl_features").exists() and not list(output.glob("checkpoint-*"))
