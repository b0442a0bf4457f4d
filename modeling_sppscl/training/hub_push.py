"""Pushes to the Hub that send the model and only the model (the file lists are in `hub.push_files`).

`Trainer.push_to_hub` and the Trainer's per-checkpoint push upload the whole output folder except `_*` and
`checkpoint-*`: predictions, the data report, a feature cache or the Space would go along. So `--push_to_hub` is
ours (`sppscl_push_to_hub`) and the Trainer's is False: the Trainer never pushes on its own. The repository is
created before training (as the Trainer's `init_hf_repo` did), the final push is the public `push_to_hub`,
overridden (`save_model` calls it, as the Trainer's does), and each checkpoint is pushed from `on_save`, once it is
complete and in place, with `hub_strategy`'s meaning kept: `end` pushes no checkpoint, `every_save` a checkpoint's
model to the repository root, `checkpoint` / `all_checkpoints` also what resuming needs into `last-checkpoint/` /
`checkpoint-N/`.
"""

import logging
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, HubStrategy, SaveStrategy
from transformers.utils import hub as transformers_hub

from ..hub.push_files import (
    CHECKPOINT_MODEL_PUSH,
    CHECKPOINT_RESUME_PUSH,
    FINAL_PUSH,
    RUN_OUTPUT_PATTERNS,
    pushed_files,
    upload_patterns,
)
from .taken_over import taken_over


logger = logging.getLogger(__name__)


class ModelOnlyPushArgumentsMixin(taken_over("push_to_hub", "set_push_to_hub", False)):
    """For a `TrainingArguments` subclass: `push_to_hub` becomes `sppscl_push_to_hub`, which `ModelOnlyPushMixin`
    acts on; the Trainer's is False (see above)."""


class ModelOnlyPushMixin:
    """For a `Trainer` subclass (with `ModelOnlyPushArgumentsMixin` arguments): final and checkpoint pushes of the
    model's files."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.push_in_progress = None
        self.add_callback(CheckpointPushCallback(self))

    def create_hub_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Create the repository `hub_model_id` (default: the output folder's name) if missing, as the Trainer's
        `init_hf_repo`; `self.hub_model_id` becomes its full id."""
        if not self.is_world_process_zero():
            return
        name = self.args.hub_model_id or Path(self.args.output_dir).absolute().name
        token = token if token is not None else self.args.hub_token
        private = private if private is not None else self.args.hub_private_repo
        self.hub_model_id = transformers_hub.hf_api().create_repo(name, token=token, private=private, exist_ok=True).repo_id

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`, then, as the Trainer's with its own `push_to_hub`, a push when the user calls it."""
        super().save_model(output_dir, _internal_call)
        if self.args.sppscl_push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True, token: str | None = None,
                    revision: str | None = None, private: bool | None = None, **kwargs):
        """`Trainer.push_to_hub` (same arguments; `kwargs` go to `create_model_card`), uploading from the output
        folder only the model's files, its card and the run's metrics, plus predictions, the data report and plots
        with `push_run_outputs`."""
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        token = token if token is not None else self.args.hub_token
        if self.hub_model_id is None:
            self.create_hub_repo(token, private)
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        model_name = kwargs.pop("model_name", None) or self.hub_model_id.split("/")[-1]
        self.create_model_card(model_name=model_name, **kwargs)
        if self.push_in_progress is not None:
            self.push_in_progress.wait_until_done()
        allow = FINAL_PUSH + (RUN_OUTPUT_PATTERNS if self.args.push_run_outputs else ())
        revision = revision if revision is not None else self.args.hub_revision
        return self._upload(self.args.output_dir, allow, None, commit_message, token, not blocking, revision)

    def push_checkpoint(self, checkpoint_folder: str | Path) -> None:
        """Push a complete checkpoint as `hub_strategy` says, in the background (skipped while the previous
        checkpoint push runs, unless `hub_always_push`)."""
        if not self.is_world_process_zero() or self.args.hub_strategy == HubStrategy.END:
            return
        if not self.args.hub_always_push and self.push_in_progress is not None and not self.push_in_progress.is_done():
            return
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        progress = (f"step {self.state.global_step}" if self.args.save_strategy == SaveStrategy.STEPS
                    else f"epoch {int(self.state.epoch)}")
        message = f"Training in progress, {progress}"
        uploads = [(CHECKPOINT_MODEL_PUSH, None, message)]
        if self.args.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS):
            path = "last-checkpoint" if self.args.hub_strategy == HubStrategy.CHECKPOINT else Path(checkpoint_folder).name
            uploads.append((CHECKPOINT_RESUME_PUSH, path, message + ", checkpoint"))
        jobs = [self._upload(checkpoint_folder, allow, path, text, self.args.hub_token, True, self.args.hub_revision)
                for allow, path, text in uploads]
        if self.push_in_progress is None or self.push_in_progress.is_done():
            self.push_in_progress = transformers_hub.PushInProgress(jobs)
        else:
            self.push_in_progress.jobs.extend(jobs)

    def _upload(self, folder, allow, path_in_repo, commit_message, token, run_as_future, revision):
        logger.info("pushing to %s%s: %s", self.hub_model_id, f"/{path_in_repo}" if path_in_repo else "",
                    ", ".join(pushed_files(folder, allow)))
        return transformers_hub.hf_api().upload_folder(
            repo_id=self.hub_model_id, folder_path=str(folder), path_in_repo=path_in_repo, commit_message=commit_message,
            token=token, run_as_future=run_as_future, revision=revision, **upload_patterns(allow),
        )


class CheckpointPushCallback(TrainerCallback):
    """Creates the repository before training; pushes each checkpoint after it is saved."""

    def __init__(self, trainer: ModelOnlyPushMixin):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if args.sppscl_push_to_hub and self.trainer.hub_model_id is None:
            self.trainer.create_hub_repo()

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if args.sppscl_push_to_hub and folder.is_dir():
            self.trainer.push_checkpoint(folder)
