"""Two-process CPU data-parallel training (gloo, torchrun): the gate decides the same on every rank."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("contrastive_batch", ["local", "global"])
def test_two_processes_end_with_identical_weights(tmp_path, contrastive_batch):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(REPO_ROOT / "tests" / "scripts" / "distributed_two_step.py"), str(tmp_path), contrastive_batch,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    weights = [torch.load(tmp_path / f"weights_rank{r}.pt") for r in (0, 1)]
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], atol=0, rtol=0, msg=key)
    gates = [json.loads((tmp_path / f"gate_rank{r}.json").read_text()) for r in (0, 1)]
    assert gates[0]["rates"] == gates[1]["rates"] and len(gates[0]["rates"]) == 4
    if contrastive_batch == "local":
        # Each rank alone would have decided differently at every step ...
        assert len(gates[0]["local"]) == 4 and all(a != b for a, b in zip(gates[0]["local"], gates[1]["local"]))
        # ... yet both took step 2 on the same steps: those where the summed counts allow it.
        assert gates[0]["rates"] == [1.0, 0.0, 1.0, 0.0]
    assert any((weights[0][k] != tiny_init_state()[k]).any() for k in weights[0] if k.startswith("classifier"))


def tiny_init_state():
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from conftest import tiny_model

    return tiny_model("default", seed=0).state_dict()
