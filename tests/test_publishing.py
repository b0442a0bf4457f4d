"""run_sppscl.py's publishing: --help, the Hub checked before any work (one-line failure), the pushed card and
Space naming the repository; the Hub is recorded, never reached."""

import json
import os
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest
import transformers.trainer
from huggingface_hub import HfApi, ModelCard, SpaceCard
from huggingface_hub.errors import HfHubHTTPError

import run_sppscl
from modeling_sppscl.hub.publish import HubAccessError, check_hub_repo


REPO_ROOT = Path(__file__).resolve().parents[1]
QUICK_DEMO = ["--do_train", "--do_eval", "--num_train_epochs", "1", "--max_train_samples", "32", "--max_eval_samples", "16",
              "--per_device_train_batch_size", "16", "--report_to", "none", "--disable_tqdm", "true"]


def test_help_names_the_demo_and_explains_every_option():
    parser = run_sppscl.build_parser()
    assert "With no arguments at all, runs the built-in demo" in parser.description
    undocumented = [action.option_strings for action in parser._actions if not (action.help or "").strip()]
    assert undocumented == []
    helps = {option: action.help for action in parser._actions for option in action.option_strings}
    assert "fine-tunes it too" in helps["--no_freeze_text_model"] and "Keep the text tower frozen" not in helps["--no_freeze_text_model"]


@pytest.mark.slow
def test_push_to_hub_offline_fails_in_one_line_before_any_work(tmp_path):
    # A token is set, so that the failure is the network's (without one, it is the missing token's).
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_TOKEN": "hf_test",
           "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run_sppscl.py"), "--output_dir", str(tmp_path / "out"), *QUICK_DEMO,
         "--push_to_hub", "--hub_model_id", "user/sppscl-demo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("--push_to_hub user/sppscl-demo: the Hub cannot be used (OfflineModeIsEnabled")
    assert not (tmp_path / "cache" / "sppscl_features").exists() and not (tmp_path / "out" / "model.safetensors").exists()


def test_unauthorised_token_fails_in_one_line(monkeypatch):
    response = SimpleNamespace(status_code=401, headers={}, request=None, url="https://huggingface.co/api/whoami-v2")
    def refuse(self):
        raise HfHubHTTPError("401 Client Error: Unauthorized for url: https://huggingface.co/api/whoami-v2\nInvalid credentials", response=response)
    monkeypatch.setattr(HfApi, "whoami", refuse)
    with pytest.raises(HubAccessError) as error:
        check_hub_repo("user/sppscl-demo", "--push_to_hub", token="hf_wrong")
    message = str(error.value)
    assert "\n" not in message and message.startswith("--push_to_hub user/sppscl-demo: the Hub cannot be used (HfHubHTTPError: 401")


def test_push_space_needs_push_to_hub(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["run_sppscl.py", "--output_dir", str(tmp_path), "--push_space", "user/space", "--report_to", "none"])
    with pytest.raises(HubAccessError, match="--push_space needs --push_to_hub"):
        run_sppscl.main()


class RecordingHub:
    """Stands in for the Hub: records each call with the files the output folder held at that moment."""

    def __init__(self, output_dir: Path):
        self.output_dir, self.calls = output_dir, []

    def record(self, name, **details):
        held = sorted(path.name for path in self.output_dir.iterdir()) if self.output_dir.exists() else []
        self.calls.append((name, {**details, "output_dir_held": held}))

    def install(self, monkeypatch):
        hub = self

        def whoami(self, *args, **kwargs):
            hub.record("whoami")
            return {"name": "user"}

        def create_repo(self, repo_id, *, repo_type=None, **kwargs):
            hub.record("create_repo", repo_id=repo_id, repo_type=repo_type)
            return SimpleNamespace(repo_id=repo_id)

        def upload_folder(self, *, repo_id, folder_path, repo_type=None, run_as_future=False, **kwargs):
            hub.record("upload_folder", repo_id=repo_id, repo_type=repo_type, folder=str(folder_path))
            answer = SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")
            if not run_as_future:
                return answer
            future = Future()  # the Trainer pushes checkpoints in the background
            future.set_result(answer)
            return future

        for name, method in (("whoami", whoami), ("create_repo", create_repo), ("upload_folder", upload_folder)):
            monkeypatch.setattr(HfApi, name, method)
        monkeypatch.setattr(transformers.trainer, "hf_api", lambda: HfApi())


@pytest.mark.slow
def test_push_checks_first_then_uploads_card_and_space_naming_the_repo(monkeypatch, tmp_path):
    output_dir = tmp_path / "sppscl-demo"
    hub = RecordingHub(output_dir)
    hub.install(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["run_sppscl.py", "--output_dir", str(output_dir), *QUICK_DEMO, "--push_to_hub",
                                      "--push_space", "sppscl-demo-space"])
    run_sppscl.main()
    names = [(name, call.get("repo_id"), call.get("repo_type")) for name, call in hub.calls]
    # A bare name gets the user's namespace; both repositories are checked before anything is written.
    assert names[:4] == [("whoami", None, None), ("create_repo", "user/sppscl-demo", "model"),
                         ("whoami", None, None), ("create_repo", "user/sppscl-demo-space", "space")]
    assert all(call["output_dir_held"] == [] for _, call in hub.calls[:4])
    uploads = [(call["repo_id"], call["repo_type"], call["folder"]) for name, call in hub.calls if name == "upload_folder"]
    # The model (each saved checkpoint, then the final folder), then the Space.
    assert {upload[:2] for upload in uploads[:-1]} == {("user/sppscl-demo", None)}
    assert uploads[-1] == ("user/sppscl-demo-space", "space", str(output_dir / "space"))
    card = (output_dir / "README.md").read_text()
    assert 'repo = "user/sppscl-demo"' in card and "https://huggingface.co/spaces/user/sppscl-demo-space" in card
    assert json.loads((output_dir / "space" / "space_config.json").read_text())["model"] == "user/sppscl-demo"
    assert SpaceCard.load(output_dir / "space" / "README.md").data.models == ["user/sppscl-demo"]
    assert ModelCard.load(output_dir / "README.md").data.pipeline_tag == "other"
