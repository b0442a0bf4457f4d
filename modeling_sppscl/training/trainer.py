"""`SppSclTrainer`: the HF Trainer with SPP-SCL's semi-push-pull update.

Two-step update (the paper's, default): step 1 minimises weighted cross-entropy plus the intra-modal losses and
steps the optimizer; the same batch is forwarded again through the updated model; the gate reads those
embeddings and, only when it allows, the inter-modal loss is back-propagated and the Trainer's own optimizer step
applies it (`SkippableOptimizer` makes that step a no-op when there is no step 2). One-step update (option): every
term in one backward, the inter-modal term gated on the same forward, stepped by the Trainer.
"""

import logging
import math
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import send_to_device
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import has_length

from ..hub.model_card import is_sppscl_card
from ..loss_sppscl import SppSclLoss
from .checkpoints import AtomicCheckpointsArgumentsMixin, AtomicCheckpointsMixin
from .distributed import average_in_place, forward_over_global_batch, sum_values
from .hub_push import ModelOnlyPushArgumentsMixin, ModelOnlyPushMixin
from .schedules import DEFAULT_HALVING_EPOCHS, LR_SCHEDULER_TYPES, SppSclSchedulerType, get_halving_schedule
from .skippable_optimizer import SkippableOptimizer


logger = logging.getLogger(__name__)

UPDATE_MODES = ("two_step", "one_step")
# The loss terms, in the order of `loss`; each is weighted by the config's `<term>_weight`.
STEP_ONE_TERMS = ("ce_loss", "intra_text_loss", "intra_image_loss")
LOSS_TERMS = (*STEP_ONE_TERMS, "inter_loss")
# Parameter names of the two towers in SppSclModel; everything else is the head.
TOWER_PREFIXES = ("text_model.", "vision_model.")


@dataclass
class SppSclTrainingArguments(AtomicCheckpointsArgumentsMixin, ModelOnlyPushArgumentsMixin, TrainingArguments):
    """`TrainingArguments` plus SPP-SCL's update options.

    Defaults that differ from `TrainingArguments`: `remove_unused_columns=False` (the collators read the raw
    `text`/`image` columns), `max_grad_norm=0` (the authors' code does not clip) and
    `metric_for_best_model="weighted_f1"` (the paper's F1, for model selection on the dev split).
    """

    sppscl_update: str = field(
        default="two_step",
        metadata={"help": f"How the semi-push-pull objective is optimised: one of {UPDATE_MODES}.", "choices": UPDATE_MODES},
    )
    contrastive_over_global_batch: bool = field(
        default=False,
        metadata={"help": "Compute the contrastive losses and the gate over the batch gathered from every process."},
    )
    lr_scheduler_type: str = field(
        default="linear",
        metadata={"help": "The learning-rate schedule: transformers' SchedulerType values, or `halving` (the paper's: "
                  "halve the learning rate every --lr_halving_epochs epochs, after the --warmup_steps warm-up if set).",
                  "choices": LR_SCHEDULER_TYPES},
    )
    lr_halving_epochs: float | None = field(
        default=None,
        metadata={"help": f"With --lr_scheduler_type halving: halve the learning rate every this many epochs "
                  f"(default {DEFAULT_HALVING_EPOCHS}, the paper's)."},
    )
    tower_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the trainable tower parameters (text_model.*, vision_model.*) when a tower "
                  "is fine-tuned; the head keeps --learning_rate. None: one learning rate for all."},
    )
    push_run_outputs: bool = field(
        default=False,
        metadata={"help": "Also push predictions_*.csv, data_report.json and the plots with --push_to_hub (by default a push "
                  "sends only the model, its card and the run's metrics)."},
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the raw columns for the collator."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping norm (0: none, as the paper)."})
    metric_for_best_model: str | None = field(default="weighted_f1", metadata={"help": "Dev metric that selects the best checkpoint."})
    # Not an option: the recipe run_sppscl.py applied ({"name", "source", "values": {option: value}, "config": {key:
    # value}}, only what the command line left unset), for the log and the model card.
    applied_recipe: dict = field(default_factory=dict, init=False)

    def __post_init__(self):
        halving = self.lr_scheduler_type == SppSclSchedulerType.HALVING
        if halving:
            # TrainingArguments turns the name into its `SchedulerType`, which has no halving: it checks the constant
            # schedule (what halving is between two halvings) and the choice is put back after.
            self.lr_scheduler_type = "constant"
        super().__post_init__()
        if halving:
            self.lr_scheduler_type = SppSclSchedulerType.HALVING
            if self.lr_halving_epochs is None:
                self.lr_halving_epochs = DEFAULT_HALVING_EPOCHS
        elif self.lr_halving_epochs is not None:
            raise ValueError(
                f"--lr_halving_epochs is the period of --lr_scheduler_type halving, not of {self.lr_scheduler_type.value}: "
                "add --lr_scheduler_type halving or drop --lr_halving_epochs"
            )
        if self.sppscl_update not in UPDATE_MODES:
            raise ValueError(f"--sppscl_update must be one of {UPDATE_MODES}, got {self.sppscl_update!r}")
        if self.sppscl_update == "two_step" and self.gradient_accumulation_steps > 1:
            raise ValueError(
                "--gradient_accumulation_steps > 1 cannot keep the two-step update's semantics (step 1 steps the "
                "optimizer on every batch); use --sppscl_update one_step or a larger batch"
            )
        if self.lr_halving_epochs is not None and self.lr_halving_epochs <= 0:
            raise ValueError(f"--lr_halving_epochs must be > 0, got {self.lr_halving_epochs}")
        if self.tower_learning_rate is not None and self.tower_learning_rate < 0:
            raise ValueError(f"--tower_learning_rate must be >= 0, got {self.tower_learning_rate}")


class SppSclTrainer(ModelOnlyPushMixin, AtomicCheckpointsMixin, Trainer):
    """Trainer for [`SppSclModel`] with the gated two-step (or one-step) semi-push-pull update.

    Logs, besides `loss` (the weighted sum of the terms below, described by one line at the start of training),
    each loss term whose weight in the config is not 0, unweighted and named as in the config: `ce_loss`,
    `intra_text_loss`, `intra_image_loss`, `inter_loss` (mean over the updates that took it); with the two-step
    update and an inter-modal term, `gate_step2_rate` (share of updates in which the gate allowed step 2); with
    `max_grad_norm > 0`, `grad_norm` (the gradient norm of each update's first optimizer step, before clipping; with
    the one-step update the Trainer's own: the window's last update's). The others are means over the logging
    window and over the processes. Checkpoints are marked complete when written to the end (see `checkpoints`);
    pushes send the model's files only (see `hub_push`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, SppSclTrainingArguments):
            raise TypeError("SppSclTrainer needs SppSclTrainingArguments")
        self._log_sums: dict[str, float] = defaultdict(float)
        self._log_counts: dict[str, int] = defaultdict(int)
        # The one owner of the objective: step 1 (over the global batch), the gate and step 2. Not `objective`:
        # the Trainer keeps its hyperparameter-search score there.
        self.sppscl_loss = SppSclLoss(self._sppscl_config, gather_over_processes=self.args.contrastive_over_global_batch)
        # The optimizer the Trainer steps after each update, told to skip when the two-step update has no step 2.
        self._skippable_optimizer: SkippableOptimizer | None = None
        # The halving schedule this trainer built: rebuilt by each `train()`, as the Trainer rebuilds its own.
        self._halving_schedule = None

    @property
    def _sppscl_config(self):
        return self.accelerator.unwrap_model(self.model).config

    def _loss_weights(self) -> dict[str, float]:
        """The loss terms the configuration uses (weight not 0) and their weights, in the order of `loss`."""
        weights = {name: getattr(self._sppscl_config, f"{name}_weight") for name in LOSS_TERMS}
        return {name: weight for name, weight in weights.items() if weight != 0}

    @property
    def _uses_inter_loss(self) -> bool:
        return self._sppscl_config.inter_loss_weight != 0

    def _objective_description(self) -> str:
        weights = self._loss_weights()
        inter_weight = weights.pop("inter_loss", None)
        step_one = " + ".join(f"{weight:g} * {name}" for name, weight in weights.items()) or "0"
        if inter_weight is None:
            text = f"loss = {step_one} (inter_loss_weight is 0: no gate, no step 2)"
        elif self.args.sppscl_update == "two_step":
            text = (f"loss = {step_one} (step 1) + {inter_weight:g} * inter_loss (step 2, taken when the gate allows; "
                    "gate_step2_rate is the share of updates that took it)")
        else:
            text = f"loss = {step_one} + {inter_weight:g} * inter_loss (one-step update; the term is added when the gate allows)"
        if self.args.max_grad_norm > 0:
            text += f"; grad_norm: each update's first optimizer step's gradient norm, before clipping to {self.args.max_grad_norm:g}"
        return f"SPP-SCL objective: {text}"

    def train(self, *args, **kwargs):
        if self.lr_scheduler is not None and self.lr_scheduler is self._halving_schedule:
            self.lr_scheduler = None
        if self.is_world_process_zero():
            logger.info(self._objective_description())
        return super().train(*args, **kwargs)

    # ----- losses -------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The step-1 objective (weighted CE + intra-modal losses): the model's own `loss` (its `SppSclLoss` on
        this process's batch), or, when `contrastive_over_global_batch` is set, `self.sppscl_loss`'s, whose
        contrastive terms cover the gathered batch."""
        if self.sppscl_loss.gather_over_processes:
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            for name, value in self.sppscl_loss(outputs.logits, outputs.text_embeds, outputs.image_embeds, inputs["labels"]).items():
                outputs[name] = value
        else:
            outputs = model(**inputs)
        if model.training:
            self._record({name: outputs[name] for name in STEP_ONE_TERMS if name in self._loss_weights()})
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def _get_eval_sampler(self, eval_dataset):
        """Evaluation and prediction in dataset order, whatever `train_sampling_strategy`: transformers applies
        "group_by_length" to evaluation too, and predictions_*.csv pairs the predictions with the ids in dataset
        order. Several processes (no sampler) get consecutive batches that `gather_for_metrics` puts back in order.
        transformers (5.x) has no public setting for the evaluation sampler; `get_eval_dataloader` and
        `get_test_dataloader` take it from this private method (tests/test_predictions_files.py fails if renamed)."""
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    # ----- the update ---------------------------------------------------------------------------------------
    def floating_point_ops(self, inputs) -> int:
        # transformers counts `input_ids` only (0 for cached tower outputs); the model knows which of its parts ran.
        return self.model.floating_point_ops(inputs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        update = self._one_step if self.args.sppscl_update == "one_step" else self._two_step
        # Over the global batch, the BatchNorm statistics and the paper's batch attention see the global batch
        # too: then the run equals one process on the concatenated batch.
        bare_model = self.accelerator.unwrap_model(model)
        with forward_over_global_batch(bare_model) if self.args.contrastive_over_global_batch else nullcontext():
            loss = update(model, inputs)
        self._average_batchnorm_statistics_across_processes(bare_model)
        return loss

    def _one_step(self, model, inputs) -> torch.Tensor:
        model.train()
        inputs = send_to_device(inputs, self.args.device)
        with self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
            takes = self._uses_inter_loss and self.sppscl_loss.gate(outputs.text_embeds, outputs.image_embeds, inputs["labels"])
            if takes:
                inter = self.sppscl_loss.step_two(outputs.text_embeds, outputs.image_embeds, inputs["labels"])
                loss = loss + inter
                self._record_inter_loss(inter)
        # Accumulated micro-batches average, as the Trainer's own step does: each loss is a batch mean already.
        loss = loss / self.current_gradient_accumulation_steps
        self.accelerator.backward(loss)
        return loss.detach()

    def _two_step(self, model, inputs) -> torch.Tensor:
        model.train()
        inputs = send_to_device(inputs, self.args.device)
        with self.compute_loss_context_manager():
            step_one_loss = self.compute_loss(model, inputs)
        self.accelerator.backward(step_one_loss)
        self._optimizer_step(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not self._uses_inter_loss:
            # inter_loss_weight 0: no step 2, and no second forward, which only the gate and step 2 read.
            self._skip_trainer_optimizer_step(trainable)
            return step_one_loss.detach()

        # The second forward runs on the bare module: under DDP a forward without backward (gate closed) would
        # leave the reducer waiting, so the inter-modal gradients are averaged by hand below.
        bare_model = self.accelerator.unwrap_model(model)
        labels = inputs["labels"]
        with self.compute_loss_context_manager():
            outputs = bare_model(**{k: v for k, v in inputs.items() if k != "labels"})
            takes = self.sppscl_loss.gate(outputs.text_embeds, outputs.image_embeds, labels)
            inter = self.sppscl_loss.step_two(outputs.text_embeds, outputs.image_embeds, labels) if takes else None
        self._record({"gate_step2_rate": float(takes)})
        if not takes:
            self._skip_trainer_optimizer_step(trainable)
            return step_one_loss.detach()
        self._record_inter_loss(inter)
        # The authors' torch (1.8.1) clears gradients to zeros, not None: when step 2 runs, AdamW then moves
        # every trainable parameter (momentum, weight decay), also those the inter-modal loss does not reach.
        for param in trainable:
            param.grad = torch.zeros_like(param)
        self.accelerator.backward(inter)
        average_in_place(param.grad for param in trainable)
        return (step_one_loss + inter).detach()

    def _skip_trainer_optimizer_step(self, trainable) -> None:
        """No second optimizer step: the Trainer's coming step (clip, optimizer.step(), schedule) runs on zero
        gradients, which a float16 GradScaler can unscale, and the optimizer skips it (see `SkippableOptimizer`)."""
        for param in trainable:
            param.grad = torch.zeros_like(param)
        self._skippable_optimizer.skip_next_step()

    def _optimizer_step(self, model) -> None:
        """The step-1 optimizer update, clipped as the Trainer's own step is; its gradient norm before clipping is
        the `grad_norm` logged."""
        if self.args.max_grad_norm > 0:
            self._record({"grad_norm": self.accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)})
        self.optimizer.step()

    @staticmethod
    def _average_batchnorm_statistics_across_processes(model) -> None:
        """Each process's BatchNorm statistics follow its own batches; averaging them keeps every rank's model
        identical (DDP alone would only copy rank 0's at the next forward)."""
        average_in_place(buffer for name, buffer in model.named_buffers() if name.endswith(("running_mean", "running_var")))

    # ----- optimizer ----------------------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        """The Trainer's optimizer (its weight-decay exemptions kept); with `tower_learning_rate` set, every param
        group is split into its tower part, at that learning rate, and its head part, at `learning_rate`: a
        pretrained tower wants far smaller steps than a freshly initialised head."""
        creating = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if creating and self.args.tower_learning_rate is not None:
            self._split_tower_groups(optimizer, self.model if model is None else model)
        if self._skippable_optimizer is None:
            self.optimizer = self._skippable_optimizer = SkippableOptimizer(optimizer)
        return self.optimizer

    def _split_tower_groups(self, optimizer, model) -> None:
        tower_ids = {id(p) for name, p in model.named_parameters() if name.startswith(TOWER_PREFIXES)}
        for group in list(optimizer.param_groups):
            tower = [p for p in group["params"] if id(p) in tower_ids]
            if not tower:
                continue
            group["params"] = [p for p in group["params"] if id(p) not in tower_ids]
            optimizer.add_param_group({**group, "params": tower, "lr": self.args.tower_learning_rate})
        # A group left without parameters (both towers trained, head all frozen) is dropped.
        optimizer.param_groups[:] = [group for group in optimizer.param_groups if group["params"]]

    # ----- schedule -----------------------------------------------------------------------------------------
    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The Trainer's scheduler, or for `--lr_scheduler_type halving` the paper's (see `schedules`)."""
        if self.args.lr_scheduler_type != SppSclSchedulerType.HALVING or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer if optimizer is not None else self.optimizer
        steps_per_epoch = max(1, math.ceil(num_training_steps / max(self.args.num_train_epochs, 1e-9)))
        if self.args.max_steps > 0:
            steps_per_epoch = max(1, len(self.get_train_dataloader()) // self.args.gradient_accumulation_steps)
        period = self.args.lr_halving_epochs * steps_per_epoch
        self.lr_scheduler = self._halving_schedule = get_halving_schedule(optimizer, period, self.args.get_warmup_steps(num_training_steps))
        return self.lr_scheduler

    def create_model_card(self, *args, **kwargs) -> None:
        """`push_to_hub` calls this just before uploading: keep the SPP-SCL card `run_sppscl.py` wrote (with the
        run's numbers); write the Trainer's generic card only where there is none."""
        if not is_sppscl_card(Path(self.args.output_dir) / "README.md"):
            super().create_model_card(*args, **kwargs)

    # ----- logging ------------------------------------------------------------------------------------------
    def _record(self, terms: dict[str, torch.Tensor | float]) -> None:
        for name, value in terms.items():
            self._log_sums[name] += float(value.detach() if isinstance(value, torch.Tensor) else value)
            self._log_counts[name] += 1

    def _record_inter_loss(self, weighted_inter: torch.Tensor) -> None:
        # Logged unweighted, as the step-1 terms are.
        self._record({"inter_loss": weighted_inter / self._sppscl_config.inter_loss_weight})

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and (self.args.sppscl_update == "two_step" or self.args.max_grad_norm <= 0):
            # The Trainer's own is that of its step after the update: step 2's, or zero gradients' (no step 2); or,
            # without clipping, a norm nobody asked for. The two-step update's is recorded by `_optimizer_step`.
            logs.pop("grad_norm", None)
        if "loss" in logs and self._log_counts:
            # Every process records the same names (the gate decides alike everywhere): sums and counts add up.
            names = sorted(self._log_sums)
            totals = sum_values([self._log_sums[name] for name in names] + [self._log_counts[name] for name in names], device=self.args.device)
            logs.update({name: total / count for name, total, count in zip(names, totals[: len(names)], totals[len(names) :])})
            self._log_sums.clear()
            self._log_counts.clear()
        super().log(logs, *args, **kwargs)


__all__ = ["SppSclTrainer", "SppSclTrainingArguments", "UPDATE_MODES"]
