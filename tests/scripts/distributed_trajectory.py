"""Run by test_trajectory.py under `torchrun --nproc_per_node 2`: the trajectory fixture's 10 updates with half of
each batch on each process and `contrastive_over_global_batch`; every rank writes its final state and its logs.

Arguments: the fixture folder, the output folder, the variant.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/

from test_trajectory import load_trajectory, train_trajectory  # noqa: E402


def main(fixture_dir: str, output_dir: str, variant: str) -> None:
    tensors, recipe = load_trajectory(Path(fixture_dir))
    trainer = train_trajectory(
        tensors, recipe, Path(output_dir) / "run", variant,
        per_device_train_batch_size=recipe["batch_size"] // 2, contrastive_over_global_batch=True,
    )
    rank = dist.get_rank()
    torch.save(trainer.model.state_dict(), Path(output_dir) / f"state_rank{rank}.pt")
    (Path(output_dir) / f"log_history_rank{rank}.json").write_text(json.dumps(trainer.state.log_history))


if __name__ == "__main__":
    main(*sys.argv[1:4])
