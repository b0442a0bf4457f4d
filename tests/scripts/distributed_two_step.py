"""Run by test_distributed.py under `torchrun --nproc_per_node 2`: a few two-step iterations in which each
process's own gate counts would decide differently, then every rank writes its final weights."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for conftest's tiny towers

import modeling_sppscl.loss_sppscl as losses  # noqa: E402
from conftest import collate_feature_rows, tiny_model  # noqa: E402
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments  # noqa: E402


LOCAL_DECISIONS = []


def disagreeing_counts(text_embeds, image_embeds, labels):
    """Per-rank counts chosen so that rank 0 alone would always take step 2 and rank 1 alone always skip it,
    while their sums take it on even calls and skip it on odd ones."""
    call = len(LOCAL_DECISIONS)
    rank = dist.get_rank()
    counts = [(0, 100), (10 if call % 2 == 0 else 100, 3)][rank]
    LOCAL_DECISIONS.append(losses.gate_takes_inter_step(*counts))
    return counts


class RandomFeatures(Dataset):
    def __init__(self, n=32):
        generator = torch.Generator().manual_seed(0)
        self.hidden = torch.randn(4, n, 6, 32, generator=generator)
        self.image = torch.randn(n, 24, 2, 2, generator=generator)
        self.labels = torch.randint(0, 3, (n,), generator=generator)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"text_hidden_states": self.hidden[:, i], "image_features": self.image[i], "labels": self.labels[i]}


def main(output_dir: str, global_batch: str) -> None:
    if global_batch == "local":
        # The gathered batch's counts are the same on every rank already; only per-rank counts can disagree.
        losses.gate_counts = disagreeing_counts
    model = tiny_model("default", seed=0)
    args = SppSclTrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=4,
        max_steps=4,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        seed=0,
        contrastive_over_global_batch=global_batch == "global",
    )
    trainer = SppSclTrainer(model=model, args=args, train_dataset=RandomFeatures(), data_collator=collate_feature_rows)
    trainer.train()
    rank = dist.get_rank()
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, Path(output_dir) / f"weights_rank{rank}.pt")
    rates = [log["gate_step2_rate"] for log in trainer.state.log_history if "gate_step2_rate" in log]
    (Path(output_dir) / f"gate_rank{rank}.json").write_text(json.dumps({"local": LOCAL_DECISIONS, "rates": rates}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "local")
