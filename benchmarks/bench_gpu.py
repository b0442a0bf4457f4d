"""GPU-first training: towers every step vs. extraction on the accelerator + head epochs from a device-resident cache.

Random-weight BERT-base + ResNet-50 built from their configs, MVSA-Single sizes (3611 train / 450 dev), batch 64,
both variants, `SppSclTrainer`'s two-step update. For each variant:

(a) towers every step (the authors' way): raw rows through `ImageTextCollator`, a few steps timed, an epoch
    projected from them;
(b) extraction of train and dev with `extract_features` on the device (DataLoader workers, autocast);
(c) head epochs from the cache held on the device (`DeviceFeatureCache`), with one dev evaluation per epoch;
(d) end to end = (b) + 150 projected epochs of (c).

The last line is `gpu_speedup_150_epochs: N.Nx`: 150 epochs of (a) divided by (d), paper variant. On a CPU, run it
with `--tiny` (tiny towers and sizes; checks that the whole path runs, its figures mean nothing for a GPU).
Usage: `python benchmarks/bench_gpu.py [--tiny] [--variants paper default]`; figures in docs/PERFORMANCE.md.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, ResNetConfig, TrainerCallback


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import StepTimer, load_line, machine_line, quiet_libraries, synthetic_data  # noqa: E402
from configuration_sppscl import SppSclConfig  # noqa: E402
from modeling_sppscl import SppSclModel, SppSclProcessor, paper_image_processor  # noqa: E402
from modeling_sppscl.data.collators import ImageTextCollator  # noqa: E402
from modeling_sppscl.data.device_cache import DeviceCacheCollator, DeviceFeatureCache  # noqa: E402
from modeling_sppscl.data.feature_cache import extract_features  # noqa: E402
from modeling_sppscl.reporting.metrics import build_compute_metrics  # noqa: E402
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments  # noqa: E402


PROJECTED_EPOCHS = 150


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny towers, 48/16 samples, batch 8 (a CPU check of the path)")
    parser.add_argument("--variants", nargs="+", default=["paper", "default"], choices=["paper", "default"])
    parser.add_argument("--train-samples", type=int, default=3611)
    parser.add_argument("--dev-samples", type=int, default=450)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tower-steps", type=int, default=5, help="steps timed for (a), after one warm-up step")
    parser.add_argument("--head-epochs", type=int, default=3, help="epochs timed for (c), after one warm-up epoch")
    args = parser.parse_args()
    if args.tiny:
        args.train_samples, args.dev_samples, args.batch_size, args.tower_steps, args.head_epochs = 48, 16, 8, 2, 2
    return args


def towers(tiny: bool) -> tuple[BertConfig, ResNetConfig]:
    if tiny:
        return (BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37),
                ResNetConfig(embedding_size=8, hidden_sizes=[16, 24], depths=[1, 1], layer_type="basic"))
    return BertConfig(), ResNetConfig()


def build(variant: str, tiny: bool, tokenizer) -> tuple[SppSclModel, SppSclProcessor]:
    torch.manual_seed(0)
    text_config, vision_config = towers(tiny)
    model = SppSclModel(SppSclConfig(variant=variant, text_config=text_config.to_dict(), vision_config=vision_config.to_dict()))
    image_processor = paper_image_processor()
    if tiny:
        image_processor.size = {"shortest_edge": 32}
    return model, SppSclProcessor.for_config(model.config, image_processor, tokenizer)


def arguments(folder: Path, batch_size: int, device: torch.device, **kwargs) -> SppSclTrainingArguments:
    # bfloat16 autocast on a GPU that has it (the towers and the head), float32 on a CPU.
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return SppSclTrainingArguments(
        output_dir=str(folder), per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size,
        report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0, bf16=bf16,
        use_cpu=device.type == "cpu", dataloader_num_workers=0 if device.type == "cpu" else 8, **kwargs,
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_variant(variant: str, args, rows, tokenizer, device: torch.device, tmp: Path) -> dict[str, float]:
    train_rows, dev_rows = rows.select(range(args.train_samples)), rows.select(range(args.train_samples, len(rows)))
    model, processor = build(variant, args.tiny, tokenizer)

    # (a) towers every step: one warm-up step, then the timed ones.
    timer = StepTimer()
    trainer = SppSclTrainer(model=model, args=arguments(tmp / "a", args.batch_size, device, max_steps=1 + args.tower_steps),
                            train_dataset=train_rows, data_collator=ImageTextCollator(processor), callbacks=[timer])
    trainer.train()
    towers_rate = args.batch_size / np.mean(timer.wall[1:])
    towers_total = PROJECTED_EPOCHS * args.train_samples / towers_rate
    print(f"[{variant}] (a) towers every step: {np.mean(timer.wall[1:]) * 1e3:.0f} ms/step, {towers_rate:.0f} samples/s; "
          f"150 epochs projected: {towers_total / 60:.1f} min")

    # (b) extraction on the training device.
    model, processor = build(variant, args.tiny, tokenizer)
    training_args = arguments(tmp / "c", args.batch_size, device, num_train_epochs=args.head_epochs + 1, eval_strategy="epoch")
    synchronize(device)
    start = time.perf_counter()
    caches = {name: extract_features(model, processor, split, cache_dir=tmp / f"cache-{variant}", batch_size=args.batch_size,
                                     device=training_args.device, num_workers=training_args.dataloader_num_workers or None)
              for name, split in (("train", train_rows), ("dev", dev_rows))}
    on_device = {name: DeviceFeatureCache(cache, training_args.device) for name, cache in caches.items()}
    synchronize(device)
    extraction = time.perf_counter() - start
    held = sum(c.text_hidden_states.nbytes + c.image_features.nbytes for c in on_device.values())
    print(f"[{variant}] (b) extraction of {len(rows)} samples + copy to {device}: {extraction:.1f} s "
          f"({len(rows) / extraction:.0f} samples/s); {held / 1e9:.2f} GB held on the device")

    # (c) head epochs from the device cache, a dev evaluation after each; the first epoch is a warm-up. Its batches
    # are selected on the device by the training process: no workers, no pinning.
    training_args.dataloader_num_workers, training_args.dataloader_pin_memory = 0, False
    timer = StepTimer()
    epoch_ends = []

    class EpochClock(TrainerCallback):
        def on_epoch_end(self, *unused, **kwargs):
            synchronize(device)
            epoch_ends.append(time.perf_counter())

        def on_evaluate(self, *unused, **kwargs):
            epoch_ends.append(time.perf_counter())

    trainer = SppSclTrainer(model=model, args=training_args, train_dataset=on_device["train"].index_dataset(),
                            eval_dataset=on_device["dev"].index_dataset(), data_collator=DeviceCacheCollator(list(on_device.values())),
                            compute_metrics=build_compute_metrics(model.config.id2label), callbacks=[timer, EpochClock()])
    trainer.train()
    # epoch_ends alternates end of training epoch, end of its evaluation; epoch i spans eval end i-1 to eval end i.
    evals = epoch_ends[1::2]
    epoch = float(np.mean(np.diff(evals)))
    print(f"[{variant}] (c) head from the device cache: {epoch:.2f} s/epoch with its dev evaluation "
          f"({args.train_samples / epoch:.0f} train samples/s), {np.mean(timer.wall[len(timer.wall) // (args.head_epochs + 1):]) * 1e3:.1f} ms/step")

    total = extraction + PROJECTED_EPOCHS * epoch
    print(f"[{variant}] (d) end to end, 150 epochs: {total / 60:.2f} min (extraction {extraction:.0f} s + head "
          f"{PROJECTED_EPOCHS * epoch / 60:.2f} min); towers every step {towers_total / 60:.1f} min: {towers_total / total:.1f}x")
    return {"speedup": towers_total / total}


def main() -> None:
    args = parse_args()
    quiet_libraries()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    print(f"machine: {machine_line()}; {gpu}; {load_line()}")
    print(f"setup: {'tiny towers' if args.tiny else 'BERT-base + ResNet-50 (random weights)'}, {args.train_samples} train + "
          f"{args.dev_samples} dev synthetic samples, batch {args.batch_size}, two-step update, device {device}")
    with synthetic_data(args.train_samples + args.dev_samples, towers(args.tiny)[0].vocab_size) as (tmp, tokenizer, rows):
        results = {variant: run_variant(variant, args, rows, tokenizer, device, tmp) for variant in args.variants}
    print(load_line())
    headline = results.get("paper", next(iter(results.values())))
    print(f"gpu_speedup_150_epochs: {headline['speedup']:.1f}x")


if __name__ == "__main__":
    main()
