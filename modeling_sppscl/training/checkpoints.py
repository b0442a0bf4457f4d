"""Checkpoints that a killed run cannot pass off as whole, and a final model that appears whole or not at all,
through the Trainer's public hooks only.

The Trainer (transformers 5.x) writes `checkpoint-N` file by file in place, so a run killed while saving leaves a
folder that `get_last_checkpoint` (and so `train(resume_from_checkpoint=True)`, which `--resume_from_checkpoint
last` is) takes for the newest checkpoint. Here:

- `on_save`, which the Trainer calls once its save has written everything (model, optimizer, scheduler, RNG
  states, `trainer_state.json`), waits for every process and then writes `COMPLETE_MARKER` into the folder: the
  last file of a checkpoint.
- `train` first sets every `checkpoint-N` without it aside as `.incomplete-checkpoint-N` (one log line each), so
  `get_last_checkpoint` sees complete checkpoints only; the one `resume_from_checkpoint` names is left in place
  (the user vouches for it, e.g. one of the plain Trainer, which writes no marker).
- `save_total_limit` is ours (`sppscl_save_total_limit`), the Trainer's is None: the Trainer rotates inside its
  save, before `on_save`, so with a limit of 1 a run killed between its rotation and the marker would keep no
  complete checkpoint. `on_save` rotates once the new checkpoint is marked, with the Trainer's own
  `rotate_checkpoints`, and never counts a cut-short folder (set aside before training; during it the only unmarked
  folder is the newest, which the rotation keeps). At the end of training, as the Trainer does for a limit of 1,
  only the best checkpoint is kept.

`save_model` (the final model, and a checkpoint's model) writes into `<folder>/.model-in-progress/`, then moves the
files into the folder, which holds other things too (checkpoints, metrics, predictions) and so cannot be swapped
whole: the old `config.json` goes first and the new one comes last, so a folder killed in between has no config
and loads as nothing, never as new weights with an old processor or config.
"""

import fnmatch
import logging
import os
import shutil
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from transformers.utils import CONFIG_NAME

from ..hub.push_files import WEIGHT_PATTERNS
from .taken_over import taken_over


logger = logging.getLogger(__name__)

MODEL_STAGING_DIR = ".model-in-progress"
COMPLETE_MARKER = "checkpoint_complete"
INCOMPLETE_PREFIX = ".incomplete-"


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    return (Path(folder) / COMPLETE_MARKER).is_file()


def incomplete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    return sorted(path for path in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                  if path.is_dir() and not is_complete_checkpoint(path))


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The checkpoint `get_last_checkpoint` takes once the incomplete ones are set aside, or None."""
    complete = [(int(path.name.split("-", 1)[1]), path) for path in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                if path.name.split("-", 1)[1].isdigit() and is_complete_checkpoint(path)]
    return str(max(complete)[1]) if complete else None


def set_aside_incomplete_checkpoints(output_dir: str | os.PathLike, keep: str | os.PathLike | None = None) -> None:
    """Rename each `checkpoint-N` of `output_dir` without the marker (but `keep`) to `.incomplete-checkpoint-N`,
    replacing an older one of that name."""
    for folder in incomplete_checkpoints(output_dir):
        if keep is not None and folder.resolve() == Path(keep).resolve():
            continue
        aside = folder.with_name(INCOMPLETE_PREFIX + folder.name)
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(folder, aside)
        logger.warning("%s was not written to the end (a run killed while saving it); set aside as %s", folder, aside.name)


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


class AtomicCheckpointsArgumentsMixin(taken_over("save_total_limit", "set_save", None)):
    """For a `TrainingArguments` subclass: `save_total_limit` becomes `sppscl_save_total_limit`, which
    `AtomicCheckpointsMixin` applies once a checkpoint is complete (see above); the Trainer's is None."""


class AtomicCheckpointsMixin:
    """For a `Trainer` subclass (with `AtomicCheckpointsArgumentsMixin` arguments): checkpoints marked complete
    when written to the end, incomplete ones set aside before training, the final model staged and moved into
    place."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(CompleteCheckpointCallback(self))

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """`Trainer.train`, after setting the incomplete checkpoints aside (see above)."""
        if self.args.should_save and os.path.isdir(self.args.output_dir):
            keep = resume_from_checkpoint if isinstance(resume_from_checkpoint, str) else None
            set_aside_incomplete_checkpoints(self.args.output_dir, keep)
        self.accelerator.wait_for_everyone()
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`, staged: a run killed while saving leaves the previous model or none (see above)."""
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


class CompleteCheckpointCallback(TrainerCallback):
    """Marks each checkpoint complete once every process has written its part, then rotates (see above)."""

    def __init__(self, trainer: AtomicCheckpointsMixin):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        self.trainer.accelerator.wait_for_everyone()  # every process has written its part (RNG state, shards)
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if args.should_save and folder.is_dir():  # not under a hyperparameter search's per-trial folders
            (folder / COMPLETE_MARKER).touch()
            rotate_checkpoints(args.output_dir, args.sppscl_save_total_limit, state.best_model_checkpoint, use_mtime=True)

    def on_train_end(self, args, state, control, **kwargs):
        best = state.best_model_checkpoint
        if args.should_save and args.sppscl_save_total_limit == 1 and best is not None and os.path.isdir(args.output_dir):
            for folder in Path(args.output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
                if folder.is_dir() and not os.path.samefile(folder, best):
                    shutil.rmtree(folder, ignore_errors=True)
