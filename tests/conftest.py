"""Tiny towers and fixtures shared by the tests: nothing is downloaded, everything runs on the CPU."""

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import datasets
import pytest
import torch
from transformers import BertConfig, BertTokenizerFast, ConvNextConfig, ResNetConfig

from configuration_sppscl import SppSclConfig
from modeling_sppscl import SppSclModel, SppSclProcessor, paper_image_processor
from modeling_sppscl.training.trainer import SppSclTrainingArguments


REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("SPPSCL_SHARED_DIR", REPO_ROOT.parent / "shared"))
TINY_WORDS = "good bad okay happy sad movie day the a is very not great awful fine cat dog sky red blue".split()


def tiny_bert_config(hidden_size: int = 32, num_hidden_layers: int = 4) -> BertConfig:
    return BertConfig(
        vocab_size=len(TINY_WORDS) + 5,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=256,
    )


def tiny_resnet_config(channels: int = 24) -> ResNetConfig:
    return ResNetConfig(embedding_size=8, hidden_sizes=[16, channels], depths=[1, 1], layer_type="basic")


def tiny_convnext_config() -> ConvNextConfig:
    return ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, patch_size=4)


def tiny_config(variant: str = "default", **kwargs) -> SppSclConfig:
    kwargs.setdefault("text_config", tiny_bert_config())
    kwargs.setdefault("vision_config", tiny_resnet_config())
    kwargs.setdefault("shared_dim", 8)
    kwargs.setdefault("lstm_hidden_size", 6)
    kwargs.setdefault("image_reduction_channels", 12)
    kwargs.setdefault("fusion_dim", 10)
    return SppSclConfig(variant=variant, **kwargs)


def tiny_model(variant: str = "default", seed: int = 0, **kwargs) -> SppSclModel:
    torch.manual_seed(seed)
    return SppSclModel(tiny_config(variant, **kwargs))


def tiny_tokenizer(folder: Path) -> BertTokenizerFast:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS]) + "\n")
    return BertTokenizerFast(str(vocab))


def tiny_image_processor():
    processor = paper_image_processor()
    processor.size = {"shortest_edge": 32}
    return processor


def tiny_processor(folder: Path, variant: str = "default") -> SppSclProcessor:
    return SppSclProcessor.for_config(tiny_config(variant), tiny_image_processor(), tiny_tokenizer(folder))


@pytest.fixture(scope="session", autouse=True)
def datasets_cache(tmp_path_factory) -> Path:
    """The datasets cache (where feature caches go by default) is a temporary folder, for this process and the
    scripts the tests start: no test writes to the user's cache."""
    folder = tmp_path_factory.mktemp("hf_datasets_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_CACHE", str(folder))
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", folder)
        yield folder


@pytest.fixture
def processor(tmp_path):
    return tiny_processor(tmp_path / "tokenizer")


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    folder = SHARED_DIR / "fixtures"
    if not (folder / "reference_head.safetensors").is_file():
        pytest.skip(f"golden fixture not found in {folder} (set SPPSCL_SHARED_DIR to the shared folder)")
    return folder


@contextmanager
def auto_classes_restored():
    """Undo what loading remote code in-process registers with the Auto classes and the pipeline registry: without
    it, later tests would get the remote copies of our classes instead of the installed ones. (The registries are
    transformers' private dicts; tests only.)"""
    from transformers.models.auto import configuration_auto, image_processing_auto, modeling_auto, processing_auto, tokenization_auto
    from transformers.pipelines import PIPELINE_REGISTRY

    registries = [mapping._extra_content for mapping in (
        configuration_auto.CONFIG_MAPPING, modeling_auto.MODEL_MAPPING, processing_auto.PROCESSOR_MAPPING,
        tokenization_auto.TOKENIZER_MAPPING, image_processing_auto.IMAGE_PROCESSOR_MAPPING,
    )] + [PIPELINE_REGISTRY.supported_tasks]
    saved = [dict(registry) for registry in registries]
    try:
        yield
    finally:
        for registry, before in zip(registries, saved):
            registry.clear()
            registry.update(before)


def collate_feature_rows(rows):
    """Rows of cached tower outputs (hidden states `[layers, tokens, width]`, image map, label) into a batch, every
    text position real."""
    return {
        "text_hidden_states": torch.stack([r["text_hidden_states"] for r in rows], dim=1),
        "attention_mask": torch.ones(len(rows), rows[0]["text_hidden_states"].shape[1], dtype=torch.long),
        "image_features": torch.stack([r["image_features"] for r in rows]),
        "labels": torch.stack([r["labels"] for r in rows]),
    }



def reference_training_arguments(output_dir, **kwargs) -> SppSclTrainingArguments:
    """Arguments for comparing the Trainer's updates with the authors' loop: their Adam (betas 0.9 / 0.999,
    epsilon 1e-8), on the CPU, every update logged, nothing saved or reported; `kwargs` add the rest."""
    return SppSclTrainingArguments(output_dir=str(output_dir), adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, report_to=[],
                                   save_strategy="no", use_cpu=True, logging_steps=1, **kwargs)

DEMO_RUN_ARGS = ["--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "3", "--max_train_samples", "288",
                 "--max_eval_samples", "48", "--max_predict_samples", "48", "--per_device_train_batch_size", "32",
                 "--learning_rate", "3e-3", "--warmup_steps", "2", "--weight_decay", "0.01", "--seed", "3",
                 "--eval_strategy", "epoch", "--logging_strategy", "epoch", "--report_to", "none", "--disable_tqdm", "true"]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The one training of the built-in demo in a test session (3 epochs, 288 training pairs, in this process):
    its output folder, read by the card, Space and documented-snippet tests. Tests that need the demo's console or
    a push during training start their own run."""
    import run_sppscl

    output_dir = tmp_path_factory.mktemp("run") / "sppscl-demo-run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["run_sppscl.py", "--output_dir", str(output_dir), *DEMO_RUN_ARGS])
        run_sppscl.main()
    return output_dir

