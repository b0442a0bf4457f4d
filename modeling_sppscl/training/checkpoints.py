"""Checkpoints that appear whole or not at all, and the newest whole one for `--resume_from_checkpoint last`.

The Trainer (transformers 5.x) writes `checkpoint-N` file by file in place, so a run killed while saving leaves a
folder that `get_last_checkpoint` takes for the newest checkpoint. Here the Trainer's own `_save_checkpoint` writes
into `<output_dir>/.checkpoint-in-progress/checkpoint-N`, and the finished folder is renamed into place.
"""

import os
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

STAGING_DIR = ".checkpoint-in-progress"
# The Trainer writes this file last: a folder without it was cut short (a run of an older, non-staging version).
COMPLETE_MARKER = "trainer_state.json"


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The `checkpoint-N` folder of `output_dir` with the highest N that was written to the end, or None."""
    folder = Path(output_dir)
    steps = [
        (int(path.name.split("-", 1)[1]), path)
        for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if path.name.split("-", 1)[1].isdigit() and (path / COMPLETE_MARKER).is_file()
    ]
    return str(max(steps)[1]) if steps else None


class AtomicCheckpointsMixin:
    """For a `Trainer` subclass: checkpoints staged under a temporary folder and renamed when complete."""

    _staging_root: Path | None = None

    def _get_output_dir(self, trial) -> str:
        return str(self._staging_root) if self._staging_root is not None else super()._get_output_dir(trial)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # Pushed after the rename: an upload of the staged folder would lose its files mid-way.
        if self._staging_root is None:
            super()._push_from_checkpoint(checkpoint_folder)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = Path(self._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root = run_dir / STAGING_DIR
        if self.args.should_save:
            # Whatever is staged was left by a run killed while saving.
            shutil.rmtree(staging_root, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self._staging_root = staging_root
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()  # every rank has written its part (RNG state, sharded optimizer)
        final = run_dir / name
        best = self.state.best_model_checkpoint
        if best is not None and Path(best).parent == staging_root:
            self.state.best_model_checkpoint = str(run_dir / Path(best).name)
        if self.args.should_save:
            self.state.save_to_json(str(staging_root / name / COMPLETE_MARKER))  # with the final paths
            if final.exists():  # a cut-short folder of an older version, or a re-run of the same step
                shutil.rmtree(final)
            os.replace(staging_root / name, final)
            staging_root.rmdir()
            rotate_checkpoints(str(run_dir), self.args.save_total_limit, self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()
        if self.args.push_to_hub:
            self._push_from_checkpoint(str(final))
