"""Checkpoints and the final model that appear whole or not at all, and the newest whole checkpoint for
`--resume_from_checkpoint last`.

The Trainer (transformers 5.x) writes `checkpoint-N` file by file in place, so a run killed while saving leaves a
folder that `get_last_checkpoint` takes for the newest checkpoint. Here the Trainer's own `_save_checkpoint` writes
into `<output_dir>/.checkpoint-in-progress/checkpoint-N`, and the finished folder is renamed into place.

`save_model` (the final model) writes into `<folder>/.model-in-progress/`, then moves the files into the folder,
which holds other things too (checkpoints, metrics, predictions) and so cannot be swapped whole: the old
`config.json` goes first and the new one comes last, so a folder killed in between has no config and loads as
nothing, never as new weights with an old processor or config.
"""

import fnmatch
import os
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from transformers.utils import CONFIG_NAME

from ..hub.push_files import WEIGHT_PATTERNS

STAGING_DIR = ".checkpoint-in-progress"
MODEL_STAGING_DIR = ".model-in-progress"
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


def move_model_into_place(staging: Path, folder: Path) -> None:
    """Move the complete saved model in `staging` into `folder`, `config.json` last; the previous model's weight
    files that the new one does not have (other shards) are removed with the old config."""
    names = sorted((path.name for path in staging.iterdir()), key=lambda name: name == CONFIG_NAME)
    (folder / CONFIG_NAME).unlink(missing_ok=True)
    for stale in folder.iterdir():
        if stale.name not in names and any(fnmatch.fnmatchcase(stale.name, pattern) for pattern in WEIGHT_PATTERNS):
            stale.unlink()
    for name in names:
        if (folder / name).is_dir():  # os.replace cannot replace a folder that has files
            shutil.rmtree(folder / name)
        os.replace(staging / name, folder / name)
    staging.rmdir()


class AtomicCheckpointsMixin:
    """For a `Trainer` subclass: checkpoints and the final model staged under a temporary folder and moved into
    place when complete."""

    _staging_root: Path | None = None

    def _get_output_dir(self, trial) -> str:
        return str(self._staging_root) if self._staging_root is not None else super()._get_output_dir(trial)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Does nothing: the Trainer calls it from inside `_save_checkpoint`, on the staged folder, to upload the
        whole output folder; checkpoints are pushed, model files only, by `CheckpointPushCallback.on_save` once
        they are in place (see `hub_push`)."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`, staged: a run killed while saving leaves the previous model or none (see above)."""
        if self._staging_root is not None:  # a checkpoint, staged as a whole already
            return super().save_model(output_dir, _internal_call)
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        staging = folder / MODEL_STAGING_DIR
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
        self.accelerator.wait_for_everyone()
        super().save_model(str(staging), _internal_call=True)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            move_model_into_place(staging, folder)
        self.accelerator.wait_for_everyone()
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

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
