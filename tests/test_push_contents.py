"""What a push sends (issue 17, part 1): the model, its card and the run's metrics, never the predictions, the data
report, a feature cache, the Space or training_args.bin; and the final model folder is complete or absent (part 5).

The Hub is recorded at `HfApi.upload_folder`, the lowest call every push goes through: each call is turned into
the file list `upload_folder` would send, by its own rule (`filter_repo_objects` with its default ignore patterns).
"""

import json
import os
import sys
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from huggingface_hub import HfApi
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects
from transformers import AutoModel, AutoProcessor

import run_sppscl
from modeling_sppscl.hub.export import CODE_FILES
from modeling_sppscl.training import checkpoints
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts"))
from distributed_two_step import RandomFeatures  # noqa: E402

from conftest import collate_feature_rows, tiny_model, tiny_processor  # noqa: E402


MODEL = {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json", *CODE_FILES}
METRICS = {"README.md", "all_results.json", "train_results.json", "eval_results.json", "test_results.json", "trainer_state.json"}
RESUME = {"trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"}
RUN = ["--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "1", "--max_train_samples", "32", "--max_eval_samples", "16",
       "--max_predict_samples", "16", "--per_device_train_batch_size", "16", "--save_strategy", "epoch", "--report_to", "none",
       "--disable_tqdm", "true", "--push_to_hub", "--hub_model_id", "user/sppscl-demo"]


class RecordedUploads:
    """Stands in for the Hub; `uploads` holds (repo_id, repo_type, the paths in the repository an upload sends)."""

    def __init__(self, monkeypatch):
        self.uploads = []
        recorder = self

        def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, repo_type=None, allow_patterns=None,
                          ignore_patterns=None, run_as_future=False, **kwargs):
            folder = Path(folder_path)
            paths = sorted(path.relative_to(folder).as_posix() for path in folder.glob("**/*") if path.is_file())
            ignore = [ignore_patterns] if isinstance(ignore_patterns, str) else list(ignore_patterns or [])
            sent = filter_repo_objects(paths, allow_patterns=allow_patterns, ignore_patterns=ignore + DEFAULT_IGNORE_PATTERNS)
            prefix = f"{path_in_repo.strip('/')}/" if path_in_repo else ""
            recorder.uploads.append((repo_id, repo_type, {prefix + path for path in sent}))
            answer = SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")
            if not run_as_future:
                return answer
            future = Future()
            future.set_result(answer)
            return future

        monkeypatch.setattr(HfApi, "whoami", lambda self, *args, **kwargs: {"name": "user"})
        monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: SimpleNamespace(repo_id=repo_id))
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
        for name in ("create_commit", "upload_file"):
            monkeypatch.setattr(HfApi, name, lambda *args, **kwargs: pytest.fail("a Hub call around upload_folder"))


def run_script(monkeypatch, output_dir: Path, *extra: str) -> None:
    monkeypatch.setattr(sys, "argv", ["run_sppscl.py", "--output_dir", str(output_dir), *RUN, *extra])
    torch.set_num_threads(1)
    run_sppscl.main()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["checkpoint", "all_checkpoints"])
def test_every_push_sends_the_model_and_only_the_model(monkeypatch, tmp_path, strategy):
    hub = RecordedUploads(monkeypatch)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")
    output_dir = tmp_path / "sppscl-demo"
    run_script(monkeypatch, output_dir, "--hub_strategy", strategy, "--push_space", "user/sppscl-demo-space")
    # What stays local is there: the test would see it in an upload.
    assert {"predictions_validation.csv", "predictions_test.csv", "data_report.json", "training_args.bin", "space"} <= set(os.listdir(output_dir))
    checkpoint = "last-checkpoint" if strategy == "checkpoint" else "checkpoint-2"
    model_uploads = [files for repo, kind, files in hub.uploads if repo == "user/sppscl-demo"]
    # At the save of epoch 1, the checkpoint's model to the root and what resuming needs to its folder; then
    # `save_model` and the final push (both: the run's end).
    assert model_uploads[:2] == [MODEL, {f"{checkpoint}/{name}" for name in MODEL | RESUME}]
    assert model_uploads[-1] == MODEL | METRICS
    assert all(files <= MODEL | METRICS for files in model_uploads[2:])
    space = [files for repo, kind, files in hub.uploads if repo == "user/sppscl-demo-space"]
    assert [kind for repo, kind, files in hub.uploads if repo == "user/sppscl-demo-space"] == ["space"]
    assert {"app.py", "README.md"} <= space[0]
    # The feature cache is under the datasets cache, keyed by content; the output folder has none.
    assert list((tmp_path / "hf_datasets" / "sppscl_features").glob("*/fingerprint.json"))
    assert not [path for path in output_dir.rglob("*.arrow")]


@pytest.mark.slow
def test_push_run_outputs_adds_predictions_and_the_data_report(monkeypatch, tmp_path):
    hub = RecordedUploads(monkeypatch)
    cache = tmp_path / "features"
    run_script(monkeypatch, tmp_path / "out", "--hub_strategy", "end", "--push_run_outputs", "--feature_cache_dir", str(cache))
    # hub_strategy end: no checkpoint push, only the run's end.
    assert hub.uploads[-1][2] == MODEL | METRICS | {"predictions_validation.csv", "predictions_test.csv", "data_report.json"}
    assert all(not any(name.startswith("checkpoint") for name in files) for _, _, files in hub.uploads)
    assert list(cache.glob("*/fingerprint.json"))


def test_checkpoint_push_ignores_what_the_output_folder_holds(monkeypatch, tmp_path):
    """Pushed from the checkpoint, not from the output folder: a cache or report left there does not go."""
    hub = RecordedUploads(monkeypatch)
    output_dir = tmp_path / "out"
    trainer = tiny_trainer(tmp_path, push_to_hub=True, hub_model_id="user/m", hub_strategy="every_save")
    (output_dir / "feature_cache" / "abc").mkdir(parents=True)
    (output_dir / "feature_cache" / "abc" / "features.arrow").write_bytes(b"x")
    (output_dir / "data_report.json").write_text("{}")
    trainer.save_model(str(output_dir / "checkpoint-3"), _internal_call=True)
    (output_dir / "checkpoint-3" / "optimizer.pt").write_bytes(b"x")
    trainer.state.global_step = 3
    trainer.callback_handler.on_save(trainer.args, trainer.state, trainer.control)
    assert [files for _, _, files in hub.uploads] == [MODEL]


@pytest.mark.parametrize("asked", ["argument", "set_push_to_hub"])
def test_the_trainer_makes_no_push_of_its_own(monkeypatch, tmp_path, asked):
    """Trained with push_to_hub=True to one checkpoint: the one upload is ours, the checkpoint's model; the Trainer's
    own checkpoint push would also send the output folder's data report and training_args.bin."""
    hub = RecordedUploads(monkeypatch)
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "data_report.json").write_text("{}")
    push = {"push_to_hub": True, "hub_model_id": "user/m", "hub_strategy": "every_save"} if asked == "argument" else {}
    args = SppSclTrainingArguments(output_dir=str(output_dir), report_to=[], use_cpu=True, max_steps=2, save_steps=2,
                                   per_device_train_batch_size=8, **push)
    if asked == "set_push_to_hub":
        args.set_push_to_hub("user/m", strategy="every_save")
    trainer = SppSclTrainer(model=tiny_model("default", seed=1), args=args, train_dataset=RandomFeatures(16),
                            data_collator=collate_feature_rows)
    trainer.train()
    assert [files for _, _, files in hub.uploads] == [{"config.json", "model.safetensors", *CODE_FILES}]


# ----- the final model folder: complete or absent --------------------------------------------------------------
def tiny_trainer(tmp_path, **arguments) -> SppSclTrainer:
    args = SppSclTrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], **arguments)
    return SppSclTrainer(model=tiny_model(), args=args, processing_class=tiny_processor(tmp_path / "tok"))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


def test_a_failed_save_leaves_the_previous_model(monkeypatch, tmp_path):
    trainer = tiny_trainer(tmp_path)
    output_dir = tmp_path / "out"
    trainer.save_model()
    before = folder_bytes(output_dir)
    with torch.no_grad():
        trainer.model.classifier.weight.add_(1.0)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    # The weights are written, the processor is not.
    monkeypatch.setattr(type(trainer.processing_class), "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_model()
    assert folder_bytes(output_dir) == before
    monkeypatch.undo()
    reloaded = AutoModel.from_pretrained(output_dir)
    torch.testing.assert_close(reloaded.classifier.weight, trainer.model.classifier.weight - 1.0)
    AutoProcessor.from_pretrained(output_dir)
    # The next save clears what the failed one staged and completes.
    trainer.save_model()
    assert not (output_dir / checkpoints.MODEL_STAGING_DIR).exists()
    torch.testing.assert_close(AutoModel.from_pretrained(output_dir).classifier.weight, trainer.model.classifier.weight)


class Killed(BaseException):
    """Stops a save as a kill would: nothing after it runs, no handler cleans up."""


def test_a_save_cut_short_while_moving_leaves_no_model(monkeypatch, tmp_path):
    trainer = tiny_trainer(tmp_path)
    output_dir = tmp_path / "out"
    trainer.save_model()
    with torch.no_grad():
        trainer.model.classifier.weight.add_(1.0)
    moved = []
    real_replace = os.replace

    def replace_until_the_config(source, target):
        if checkpoints.MODEL_STAGING_DIR in str(source):
            if Path(target).name == "config.json":
                raise Killed
            moved.append(Path(target).name)
        real_replace(source, target)

    monkeypatch.setattr(checkpoints.os, "replace", replace_until_the_config)
    with pytest.raises(Killed):
        trainer.save_model()
    # Every new file is in but the config, which went first: nothing loads new weights with an old config.
    assert {"model.safetensors", "processor_config.json", "tokenizer.json"} <= set(moved)
    assert not (output_dir / "config.json").exists()
    with pytest.raises((OSError, ValueError), match="config.json"):
        AutoModel.from_pretrained(output_dir)
    monkeypatch.undo()
    trainer.save_model()
    torch.testing.assert_close(AutoModel.from_pretrained(output_dir).classifier.weight, trainer.model.classifier.weight)
