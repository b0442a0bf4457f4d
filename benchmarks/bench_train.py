"""Training speed: frozen towers run at every step (the paper's code) vs. the frozen-tower feature cache.

Paper-size towers (BERT-base and ResNet-50 shapes, random weights), paper variant, texts padded to 202 tokens,
random 224x224 JPEG images and random texts. Both runs use `SppSclTrainer`'s two-step update:

(a) raw rows through `ImageTextCollator`: every step forwards the whole model, towers included, twice. It is slow
    on a CPU, so only a few steps are timed and an epoch is extrapolated from them.
(b) `extract_features` once, then whole head epochs from the cache through `CachedFeatureCollator`.

The last line is `speedup_150_epochs: N.Nx`: the projected time of 150 epochs on MVSA-Single (3611 samples) for (a)
divided by that for (b) (extraction included). Usage: `python benchmarks/bench_train.py [--quick] [--profile]
[--head-threads 1]`; figures and their reading in docs/PERFORMANCE.md.
"""

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from datasets import Dataset
from transformers import BertConfig, BertTokenizerFast, ResNetConfig, TrainerCallback
from transformers.utils import logging as hf_logging


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configuration_sppscl import SppSclConfig  # noqa: E402
from modeling_sppscl import SppSclModel, SppSclProcessor, paper_image_processor  # noqa: E402
from modeling_sppscl.data.collators import ImageTextCollator  # noqa: E402
from modeling_sppscl.data.feature_cache import CachedFeatureCollator  # noqa: E402
from modeling_sppscl.data.feature_cache import FEATURES_FILE, extract_features  # noqa: E402
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments  # noqa: E402


MVSA_SINGLE_SAMPLES = 3611
PROJECTED_EPOCHS = 150
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class StepTimer(TrainerCallback):
    """Wall and process CPU time of each optimizer step, data loading of its batch included (Trainer start-up
    excluded). CPU time is less sensitive to other processes sharing the machine."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._last = (0.0, 0.0)

    @staticmethod
    def _now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = self._now()

    def on_step_end(self, args, state, control, **kwargs):
        now = self._now()
        self.wall.append(now[0] - self._last[0])
        self.cpu.append(now[1] - self._last[1])
        self._last = now


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 samples, batch 16, 1 tower step, 2 head epochs (~2 min)")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tower-steps", type=int, default=3, help="steps timed for (a), towers run every step")
    parser.add_argument("--head-epochs", type=int, default=3, help="epochs timed for (b), from the cache")
    parser.add_argument("--storage-dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument(
        "--head-threads", type=int, default=None,
        help="torch threads for the head epochs of (b) (default: torch's own); the BiLSTM's 200 small steps can run "
        "faster on one thread than on two that wait for each other, markedly so on a busy machine",
    )
    parser.add_argument("--profile", action="store_true", help="profile one head step from the cache (torch.profiler)")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.batch_size, args.tower_steps, args.head_epochs = 64, 16, 1, 2
    return args


def synthetic_tokenizer(folder: Path, vocab_size: int) -> BertTokenizerFast:
    """A WordPiece tokenizer with BERT-base's vocabulary size, made of the words `w0`, `w1`, ..."""
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL_TOKENS + [f"w{i}" for i in range(vocab_size - len(SPECIAL_TOKENS))]) + "\n")
    return BertTokenizerFast(str(vocab))


def synthetic_rows(folder: Path, count: int, vocab_size: int, seed: int = 0) -> Dataset:
    """Random 224x224 JPEG files and texts of 10 to 40 words (MVSA tweets are ~20), three labels."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        path = folder / f"{index}.jpg"
        PIL.Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    words = vocab_size - len(SPECIAL_TOKENS)
    texts = [" ".join(f"w{w}" for w in rng.integers(0, words, rng.integers(10, 41))) for _ in range(count)]
    labels = rng.integers(0, 3, count).tolist()
    return Dataset.from_dict({"id": [str(i) for i in range(count)], "text": texts, "image": paths, "label": labels})


@contextmanager
def synthetic_data(count: int, vocab_size: int):
    """A temporary folder (removed on exit), a tokenizer over `vocab_size` ids and `count` synthetic rows whose
    images are in the folder's `images/`."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        yield folder, synthetic_tokenizer(folder, vocab_size), synthetic_rows(folder / "images", count, vocab_size)


def paper_model() -> SppSclModel:
    torch.manual_seed(0)
    config = SppSclConfig(variant="paper", text_config=BertConfig().to_dict(), vision_config=ResNetConfig().to_dict())
    return SppSclModel(config)


def default_variant_head() -> SppSclModel:
    """A default-variant head for the same features (768-wide text, 2048-channel map); its shallow towers are
    never run."""
    torch.manual_seed(0)
    text_config = BertConfig(num_hidden_layers=3).to_dict()
    vision_config = ResNetConfig(depths=[1, 1, 1, 1]).to_dict()
    return SppSclModel(SppSclConfig(variant="default", text_config=text_config, vision_config=vision_config))


def training_arguments(folder: Path, batch_size: int, **kwargs) -> SppSclTrainingArguments:
    return SppSclTrainingArguments(
        output_dir=str(folder),
        per_device_train_batch_size=batch_size,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        **kwargs,
    )


def time_training(model, dataset, collator, args) -> tuple[StepTimer, SppSclTrainer]:
    timer = StepTimer()
    trainer = SppSclTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[timer])
    trainer.train()
    return timer, trainer


def float16_storage_effect(model: SppSclModel, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(max |logit change| in eval mode, relative train-mode loss change) when the cached features are rounded
    to float16, on one batch of these random towers."""
    rounded = {**batch, **{k: batch[k].half().float() for k in ("text_hidden_states", "image_features")}}

    def loss(inputs: dict[str, torch.Tensor]) -> float:
        torch.manual_seed(0)  # the same dropout masks for both
        return model(**inputs).loss.item()

    with torch.no_grad():
        model.eval()
        logits_change = (model(**rounded).logits - model(**batch).logits).abs().max().item()
        model.train()
        exact = loss(batch)
        loss_change = abs(loss(rounded) - exact) / exact
    return logits_change, loss_change


def profile_head_step(trainer: SppSclTrainer, batch: dict[str, torch.Tensor]) -> None:
    """One two-step update of the head from cached features, by operator (self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    trainer.training_step(trainer.model, batch)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        trainer.training_step(trainer.model, batch)
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=45))


def quiet_libraries() -> None:
    """Only the benchmark's own lines: no library logs, and no warning that the paper variant runs its frozen towers
    in train mode (the cache uses eval-mode towers on purpose)."""
    hf_logging.set_verbosity_error()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore", message="frozen_towers_follow_train_mode")


def machine_line() -> str:
    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
    cpu = names[0] if names else platform.processor()
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def load_line() -> str:
    """The machine may be shared: other processes' load slows every figure down."""
    return "load average (1, 5, 15 min): " + ", ".join(f"{load:.2f}" for load in os.getloadavg())


def main() -> None:
    args = parse_args()
    quiet_libraries()
    print(f"machine: {machine_line()}; {load_line()}")
    print(f"setup: paper variant, BERT-base + ResNet-50 shapes (random weights), text padded to 202, "
          f"batch {args.batch_size}, {args.samples} synthetic samples (224x224 JPEG), two-step update (SppSclTrainer), cache in {args.storage_dtype}")

    with synthetic_data(args.samples, BertConfig().vocab_size) as (tmp, tokenizer, rows):
        model = paper_model()
        processor = SppSclProcessor.for_config(model.config, paper_image_processor(), tokenizer)

        # (a) towers every step: only a few steps, each forwards the whole model twice.
        timer, _ = time_training(
            model, rows, ImageTextCollator(processor),
            training_arguments(tmp / "a", args.batch_size, max_steps=args.tower_steps),
        )
        towers_rate, towers_cpu_rate = args.batch_size / np.mean(timer.wall), args.batch_size / np.mean(timer.cpu)
        print(f"(a) towers every step: {np.mean(timer.wall):.1f} s/step (CPU {np.mean(timer.cpu):.1f} s) over "
              f"{len(timer.wall)} timed steps ({', '.join(f'{d:.1f}' for d in timer.wall)} s), {towers_rate:.2f} samples/s; "
              f"epoch of {args.samples} extrapolated from these steps: {args.samples / towers_rate:.0f} s")

        # (b) the cache: extraction once, then head epochs.
        model = paper_model()
        start = time.perf_counter(), time.process_time()
        cache = extract_features(
            model, processor, rows, cache_dir=tmp / "cache", batch_size=args.batch_size, storage_dtype=args.storage_dtype
        )
        extraction, extraction_cpu = time.perf_counter() - start[0], time.process_time() - start[1]
        extraction_rate, extraction_cpu_rate = args.samples / extraction, args.samples / extraction_cpu
        cache_bytes = sum(path.stat().st_size for path in (tmp / "cache").glob(f"*/{FEATURES_FILE}"))
        print(f"(b) extraction: {extraction:.1f} s (CPU {extraction_cpu:.1f} s) for {args.samples} samples "
              f"({extraction_rate:.2f} samples/s); cache {cache_bytes / 1e6:.0f} MB ({cache_bytes / args.samples / 1e6:.2f} "
              f"MB/sample, {cache_bytes / args.samples * MVSA_SINGLE_SAMPLES / 1e9:.1f} GB for MVSA-Single)")

        start = time.perf_counter()
        for first in reversed(range(0, len(cache), args.batch_size)):  # ends holding the first batch
            batch = CachedFeatureCollator()(cache.__getitems__(list(range(first, min(first + args.batch_size, len(cache))))))
        print(f"(b) cache read + collate: {args.samples / (time.perf_counter() - start):.0f} samples/s")

        if args.head_threads is not None:
            torch.set_num_threads(args.head_threads)
        timer, trainer = time_training(
            model, cache, CachedFeatureCollator(),
            training_arguments(tmp / "b", args.batch_size, num_train_epochs=args.head_epochs),
        )
        head_rate = args.samples * args.head_epochs / sum(timer.wall)
        head_cpu_rate = args.samples * args.head_epochs / sum(timer.cpu)
        print(f"(b) head from the cache: {np.mean(timer.wall):.2f} s/step (CPU {np.mean(timer.cpu):.2f} s) over "
              f"{len(timer.wall)} steps ({args.head_epochs} epochs, {torch.get_num_threads()} threads), {head_rate:.1f} "
              f"samples/s; epoch of {args.samples}: {args.samples / head_rate:.1f} s")

        for name, head in (("paper", model), ("default", default_variant_head())):
            logits_change, loss_change = float16_storage_effect(head, batch)
            print(f"float16 storage, {name} head, one batch: max |logit change| {logits_change:.1e} (eval), "
                  f"train-mode loss change {loss_change:.1e} (relative)")
        if args.profile:
            profile_head_step(trainer, batch)

    towers_total = PROJECTED_EPOCHS * MVSA_SINGLE_SAMPLES / towers_rate
    cache_total = MVSA_SINGLE_SAMPLES / extraction_rate + PROJECTED_EPOCHS * MVSA_SINGLE_SAMPLES / head_rate
    cpu_speedup = (PROJECTED_EPOCHS / towers_cpu_rate) / (1 / extraction_cpu_rate + PROJECTED_EPOCHS / head_cpu_rate)
    print(f"projected {PROJECTED_EPOCHS} epochs on MVSA-Single ({MVSA_SINGLE_SAMPLES} samples), this machine:")
    print(f"  (a) towers every step: {towers_total / 3600:.1f} h (extrapolated from {args.tower_steps} measured step(s))")
    print(f"  (b) cache: {cache_total / 3600:.2f} h = extraction {MVSA_SINGLE_SAMPLES / extraction_rate / 60:.1f} min + "
          f"head {PROJECTED_EPOCHS * MVSA_SINGLE_SAMPLES / head_rate / 3600:.2f} h")
    print(f"  speedup from process CPU time instead of wall time: {cpu_speedup:.1f}x")
    print(load_line())
    print(f"speedup_150_epochs: {towers_total / cache_total:.1f}x")


if __name__ == "__main__":
    main()
