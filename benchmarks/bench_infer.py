"""Inference speed: the `image-text-classification` pipeline against a bare `processor(...)` + `model(**inputs)`.

Paper-size towers (BERT-base and ResNet-50 shapes, random weights), default variant, random 256x256 PIL images
and tweet-length random texts. Both paths get the same PIL images and texts, so both include preprocessing; the
pipeline adds its input checks, batching and post-processing. Runs alternate between the two paths so that
drifting load on the machine hits both alike.

Prints latency at batch 1 (median), throughput at batch 32, the process's peak resident memory, and as its last
line `pipeline_overhead: N%` (median pipeline latency over median bare latency at batch 1, minus one).
Usage: `python benchmarks/bench_infer.py [--quick] [--repeats N]`.
"""

import argparse
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from transformers import BertConfig, BertTokenizerFast, ResNetConfig
from transformers.utils import logging as hf_logging


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configuration_sppscl import SppSclConfig  # noqa: E402
from modeling_sppscl import ImageTextClassificationPipeline, SppSclModel, SppSclProcessor, paper_image_processor  # noqa: E402


WORDS = "good bad day the movie great awful not very happy sad love hate today".split()


def build(quick: bool) -> tuple[SppSclModel, SppSclProcessor]:
    folder = Path(tempfile.mkdtemp())
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    tokenizer = BertTokenizerFast(str(folder / "vocab.txt"))
    if quick:
        text = BertConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128)
        vision = ResNetConfig(embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1], layer_type="basic")
    else:
        text, vision = BertConfig(), ResNetConfig()
    torch.manual_seed(0)
    model = SppSclModel(SppSclConfig(text_config=text, vision_config=vision)).eval()
    processor = SppSclProcessor.for_config(model.config, paper_image_processor(), tokenizer)
    return model, processor


def make_pairs(count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "image": PIL.Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)),
            "text": " ".join(rng.choice(WORDS, size=int(rng.integers(8, 30)))),
        }
        for _ in range(count)
    ]


def bare(model, processor, pairs: list[dict]) -> torch.Tensor:
    with torch.inference_mode():
        inputs = processor(images=[p["image"] for p in pairs], text=[p["text"] for p in pairs])
        return model(**inputs).logits.softmax(dim=-1)


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def alternate(runs: dict, repeats: int) -> dict[str, list[float]]:
    """Times of each named run, alternating between them `repeats` times after one warm-up each."""
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(timed(run))
    return times


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny towers instead of BERT-base / ResNet-50 shapes")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of each path at batch 1")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")

    model, processor = build(args.quick)
    classify = ImageTextClassificationPipeline(model=model, processor=processor)
    print(f"towers: {'tiny' if args.quick else 'BERT-base + ResNet-50 shapes (random weights)'}, default variant, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    memory_before = peak_memory_mb()

    single = make_pairs(1)
    one = alternate({"pipeline": lambda: classify(single[0]), "bare": lambda: bare(model, processor, single)}, args.repeats)
    batch = make_pairs(32, seed=1)
    many = alternate(
        {"pipeline": lambda: classify(batch, batch_size=32), "bare": lambda: bare(model, processor, batch)},
        max(2, args.repeats // 5),
    )

    latency = {name: statistics.median(values) for name, values in one.items()}
    throughput = {name: 32 / statistics.median(values) for name, values in many.items()}
    for name in ("bare", "pipeline"):
        print(f"{name:>8}: batch 1 latency {1000 * latency[name]:8.1f} ms (median of {args.repeats}), "
              f"batch 32 throughput {throughput[name]:7.1f} pairs/s")
    print(f"peak resident memory: {peak_memory_mb():.0f} MB (after building the model: {memory_before:.0f} MB)")
    print(f"pipeline / bare at batch 32: {throughput['bare'] / throughput['pipeline']:.3f}x the time")
    print(f"pipeline_overhead: {100 * (latency['pipeline'] / latency['bare'] - 1):.1f}%")


if __name__ == "__main__":
    main()
