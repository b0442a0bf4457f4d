"""Distribution: save folders that load as remote code without the package, the `image-text-classification`
pipeline, the Inference Endpoints handler, the model card and `Trainer.push_to_hub`; all offline."""

import ast
import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
import transformers.trainer
import transformers.utils.hub
from huggingface_hub import HfApi, ModelCard, metadata_load
from transformers import AutoModel, AutoProcessor, Trainer, TrainingArguments, pipeline

from modeling_sppscl import SppSclModel, SppSclProcessor
from modeling_sppscl.handler import parse_request
from modeling_sppscl.hub.export import CODE_FILES, assert_hub_folder_complete, hub_folder_files
from modeling_sppscl.hub.model_card import (
    build_model_card,
    eval_results_from_metrics,
    is_sppscl_card,
    write_model_card,
)
from modeling_sppscl.pipeline_sppscl import ImageTextClassificationPipeline
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments

from conftest import TINY_WORDS, tiny_model, tiny_processor


TEXT = "a very good day with the dog"
METRICS = {
    "validation": {"accuracy": 0.71875, "weighted_f1": 0.7034, "macro_f1": 0.6512, "loss": 0.9, "f1_positive": 0.8},
    "test": {"accuracy": 0.6990291262135923, "weighted_f1": 0.6875, "macro_f1": 0.6401},
}
TRAINING_SUMMARY = {"variant": "default", "epochs": 3, "batch_size": 4, "learning_rate": 0.01, "seed": 0}
BASE_MODELS = ["google-bert/bert-base-uncased", "microsoft/resnet-50"]
DATASET_NAME = "synthetic demo set"
MODEL_FILES = {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json"}
REPO_ROOT = Path(__file__).resolve().parents[1]
# Run in a fresh interpreter, outside the repository, with the sppscl packages made unimportable: what a user of
# the Hub repository has. It loads the folder as remote code only and reports what it finds as JSON.
REMOTE_CHECK = r"""
import base64, importlib.abc, importlib.util, json, sys
from pathlib import Path


class BlockSppsclPackages(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("configuration_sppscl", "modeling_sppscl"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None


sys.meta_path.insert(0, BlockSppsclPackages())

import PIL.Image
import torch
from transformers import AutoModel, AutoProcessor, pipeline

folder, image_path, text, cases_path, resaved, report_path, repo_root = sys.argv[1:8]
# An editable install puts the repository on sys.path through a .pth file; take it off, the finder above blocks
# whatever other route there is.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(repo_root)]
cases = json.loads(Path(cases_path).read_text())
report = {}
try:
    import configuration_sppscl
except ModuleNotFoundError as error:
    report["package_import_error"] = str(error)

model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
with torch.no_grad():
    report["logits"] = model(**processor(images=PIL.Image.open(image_path), text=text)).logits[0].tolist()

classify = pipeline(model=folder, trust_remote_code=True)
pair = {"image": image_path, "text": text}
report["pipeline_single"] = classify(pair)
report["pipeline_top1"] = classify(pair, top_k=1)
report["pipeline_batch"] = classify([pair, {"image": PIL.Image.open(image_path), "text": text}], batch_size=2)
report["pipeline_errors"] = {}
for name, bad in cases["bad_pipeline_inputs"].items():
    try:
        classify(bad)
        report["pipeline_errors"][name] = {"type": None, "message": "no error"}
    except Exception as error:
        report["pipeline_errors"][name] = {"type": type(error).__name__, "message": str(error)}

spec = importlib.util.spec_from_file_location("endpoint_handler", Path(folder) / "handler.py")
handler_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(handler_module)
handler = handler_module.EndpointHandler(path=folder)
image_bytes = Path(image_path).read_bytes()
encoded = base64.b64encode(image_bytes).decode()
report["handler_single"] = handler({"inputs": {"image": encoded, "text": text}})
report["handler_raw_bytes"] = handler({"inputs": {"image": image_bytes, "text": text}})
report["handler_list"] = handler({"inputs": [{"image": encoded, "text": text}], "parameters": {"top_k": 1}})
report["handler_errors"] = {}
for name, request in cases["bad_handler_requests"].items():
    try:
        report["handler_errors"][name] = {"type": None, "message": f"answered {handler(request)!r}"}
    except Exception as error:
        report["handler_errors"][name] = {"type": type(error).__name__, "message": str(error)}

model.save_pretrained(resaved)
processor.save_pretrained(resaved)
report["resaved"] = resaved
report["class_modules"] = {
    "model": type(model).__module__, "config": type(model.config).__module__,
    "processor": type(processor).__module__, "pipeline": type(classify).__module__,
}
# An editable install leaves its path finder (`__editable___sppscl_*_finder`) in sys.modules: not our code.
report["sppscl_modules"] = sorted(name for name in sys.modules if "sppscl" in name and not name.startswith("__editable__"))
Path(report_path).write_text(json.dumps(report))
"""


def random_image(seed: int, size=(40, 48)) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8))


def trained_tiny_model(processor: SppSclProcessor) -> SppSclModel:
    """The tiny model after a few AdamW steps, so that saved weights differ from any initialisation."""
    model = tiny_model("default").train()
    texts = [" ".join(TINY_WORDS[index : index + 4]) for index in range(0, 8, 2)]
    batch = processor(images=[random_image(seed) for seed in range(4)], text=texts)
    labels = torch.tensor([0, 1, 2, 0])
    optimizer = torch.optim.AdamW([parameter for parameter in model.parameters() if parameter.requires_grad], lr=1e-2)
    for _ in range(3):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def softmax_ranking(logits: list[float], id2label: dict[int, str]) -> list[dict]:
    scores = torch.tensor(logits).softmax(dim=-1).tolist()
    return sorted(({"label": id2label[index], "score": score} for index, score in enumerate(scores)), key=lambda entry: -entry["score"])


def assert_same_ranking(found: list[dict], expected: list[dict], atol: float = 1e-6) -> None:
    assert [entry["label"] for entry in found] == [entry["label"] for entry in expected]
    np.testing.assert_allclose([entry["score"] for entry in found], [entry["score"] for entry in expected], atol=atol, rtol=0)


@dataclass
class Export:
    folder: Path
    image_path: Path
    not_an_image: Path
    model: SppSclModel
    processor: SppSclProcessor
    logits: list[float]

    @property
    def ranking(self) -> list[dict]:
        return softmax_ranking(self.logits, self.model.config.id2label)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Export:
    root = tmp_path_factory.mktemp("hub")
    processor = tiny_processor(root / "tokenizer")
    model = trained_tiny_model(processor)
    folder = root / "exported"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    write_model_card(folder, model.config, METRICS, TRAINING_SUMMARY, BASE_MODELS, DATASET_NAME, None)
    image_path = root / "photo.png"
    random_image(42, size=(50, 64)).save(image_path)
    not_an_image = root / "notes.png"
    not_an_image.write_text("not an image")
    with torch.no_grad():
        logits = model(**processor(images=PIL.Image.open(image_path), text=TEXT)).logits[0].tolist()
    return Export(folder, image_path, not_an_image, model, processor, logits)


def bad_pipeline_inputs(export: Export) -> dict[str, tuple[object, str]]:
    """Bad inputs (JSON-able, so the remote-code process can use them too) and what their error must say."""
    image = str(export.image_path)
    return {
        "no_text": ({"image": image}, "input 0: missing 'text'"),
        "empty_text": ({"image": image, "text": "   "}, "input 0: 'text' is empty"),
        "no_image": ({"text": TEXT}, "input 0: missing 'image'"),
        "missing_file": ({"image": str(export.folder / "absent.png"), "text": TEXT}, "no image file at"),
        "unreadable_file": ({"image": str(export.not_an_image), "text": TEXT}, "cannot read image file"),
        "image_type": ({"image": 3, "text": TEXT}, "'image' must be a PIL image, a path or a uint8 numpy array, got int"),
        "text_type": ({"image": image, "text": ["a"]}, "'text' must be a string, got list"),
        "second_of_list": ([{"image": image, "text": TEXT}, {"image": image, "text": ""}], "input 1: 'text' is empty"),
        "not_a_dict": ([TEXT], "input 0: expected a dict"),
        "unexpected_key": ({"image": image, "text": TEXT, "caption": "x"}, "unexpected keys ['caption']"),
        "not_a_pair": ("just text", "expects a dict"),
    }


def bad_handler_requests(export: Export) -> dict[str, tuple[object, str]]:
    encoded = base64.b64encode(export.image_path.read_bytes()).decode()
    return {
        "no_inputs": ({"image": encoded, "text": TEXT}, 'must be an object with "inputs"'),
        "not_base64": ({"inputs": {"image": "%%%", "text": TEXT}}, "input 0: 'image' is not valid base64"),
        "a_server_path": ({"inputs": {"image": str(export.image_path), "text": TEXT}}, "input 0: 'image' is not valid base64"),
        "not_an_image": ({"inputs": {"image": base64.b64encode(b"hello").decode(), "text": TEXT}}, "input 0: cannot read image"),
        "no_image": ({"inputs": [{"image": encoded, "text": TEXT}, {"text": TEXT}]}, "input 1: missing 'image'"),
        "empty_text": ({"inputs": {"image": encoded, "text": ""}}, "input 0: 'text' is empty"),
        "empty_list": ({"inputs": []}, '"inputs" is an empty list'),
        "bad_parameter": ({"inputs": {"image": encoded, "text": TEXT}, "parameters": {"temperature": 1}}, '"parameters" must be'),
        "bad_top_k": ({"inputs": {"image": encoded, "text": TEXT}, "parameters": {"top_k": 0}}, "top_k must be a positive integer"),
    }


# ----- the saved folder --------------------------------------------------------------------------------------
def test_folder_is_complete_and_lists_what_an_upload_sends(export):
    uploaded = assert_hub_folder_complete(export.folder)
    assert set(uploaded) == MODEL_FILES | set(CODE_FILES) | {"README.md"}
    assert uploaded == hub_folder_files(export.folder)


def test_config_and_processor_declare_remote_code(export):
    config = json.loads((export.folder / "config.json").read_text())
    # Literal: a wrong constant in the package must not pass by being the test's expectation too.
    assert config["auto_map"] == {"AutoConfig": "configuration_sppscl.SppSclConfig", "AutoModel": "modeling_sppscl.SppSclModel"}
    assert config["custom_pipelines"] == {"image-text-classification": {
        "impl": "pipeline_sppscl.ImageTextClassificationPipeline", "pt": ["AutoModel"], "type": "multimodal"}}
    for reference in [*config["auto_map"].values(), config["custom_pipelines"]["image-text-classification"]["impl"]]:
        module, name = reference.split(".")
        assert f"class {name}(" in (export.folder / f"{module}.py").read_text(), reference
    assert json.loads((export.folder / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_sppscl.SppSclProcessor"
    }


def test_code_files_import_each_other_relatively(export):
    for name in CODE_FILES:
        for node in ast.walk(ast.parse((export.folder / name).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] not in ("configuration_sppscl", "modeling_sppscl"), (name, node.lineno)


@pytest.mark.parametrize("removed", ["modeling_sppscl.py", "handler.py", "model.safetensors", "README.md", "tokenizer.json"])
def test_incomplete_folder_names_what_is_missing(export, tmp_path, removed):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in hub_folder_files(export.folder):
        (folder / name).write_bytes((export.folder / name).read_bytes())
    (folder / removed).unlink()
    with pytest.raises(ValueError, match=removed.split(".")[0]):
        assert_hub_folder_complete(folder)


def test_checkpoint_folders_are_left_out_of_the_upload(export, tmp_path):
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "optimizer.pt").write_bytes(b"x")
    (tmp_path / "config.json").write_text("{}")
    assert hub_folder_files(tmp_path) == ["config.json"]
    assert hub_folder_files(tmp_path, ignore_patterns=()) == ["checkpoint-10/optimizer.pt", "config.json"]


def test_installed_package_loads_the_folder_without_remote_code(export):
    model = AutoModel.from_pretrained(export.folder).eval()
    processor = AutoProcessor.from_pretrained(export.folder)
    assert type(model) is SppSclModel and type(processor) is SppSclProcessor
    with torch.no_grad():
        logits = model(**processor(images=PIL.Image.open(export.image_path), text=TEXT)).logits[0].tolist()
    np.testing.assert_allclose(logits, export.logits, atol=1e-6, rtol=0)


# ----- remote code, in a process where the package cannot be imported -------------------------------------------
@pytest.fixture(scope="module")
def remote(export, tmp_path_factory) -> dict:
    """What `REMOTE_CHECK` finds when it loads the folder as remote code only."""
    workdir = tmp_path_factory.mktemp("elsewhere")
    cases = workdir / "cases.json"
    cases.write_text(json.dumps({
        "bad_pipeline_inputs": {name: case for name, (case, _) in bad_pipeline_inputs(export).items()},
        "bad_handler_requests": {name: request for name, (request, _) in bad_handler_requests(export).items()},
    }))
    report = workdir / "report.json"
    script = workdir / "remote_code_check.py"
    script.write_text(REMOTE_CHECK)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(workdir / "modules"), TRANSFORMERS_VERBOSITY="error")
    arguments = [str(export.folder), str(export.image_path), TEXT, str(cases), str(workdir / "resaved"), str(report), str(REPO_ROOT)]
    completed = subprocess.run(
        [sys.executable, str(script), *arguments], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(report.read_text())


@pytest.mark.slow
def test_remote_process_cannot_import_the_package(remote):
    assert remote["package_import_error"].startswith("No module named 'configuration_sppscl'")
    assert all(module.startswith("transformers_modules.") for module in remote["sppscl_modules"])
    assert all(module.startswith("transformers_modules.") for module in remote["class_modules"].values())


@pytest.mark.slow
def test_remote_model_and_processor_reproduce_the_logits(export, remote):
    np.testing.assert_allclose(remote["logits"], export.logits, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_remote_pipeline_scores_like_the_model(export, remote):
    assert remote["class_modules"]["pipeline"].endswith(".pipeline_sppscl")
    assert_same_ranking(remote["pipeline_single"], export.ranking)
    assert_same_ranking(remote["pipeline_top1"], export.ranking[:1])
    # The default variant is batch independent: batched pairs score as when alone.
    assert len(remote["pipeline_batch"]) == 2
    for ranking in remote["pipeline_batch"]:
        assert_same_ranking(ranking, export.ranking, atol=1e-5)


@pytest.mark.slow
def test_remote_handler_scores_base64_images(export, remote):
    assert_same_ranking(remote["handler_single"], export.ranking)
    assert_same_ranking(remote["handler_raw_bytes"], export.ranking)
    assert len(remote["handler_list"]) == 1
    assert_same_ranking(remote["handler_list"][0], export.ranking[:1])


@pytest.mark.slow
def test_remote_pipeline_rejects_bad_inputs_clearly(export, remote):
    for name, (_, message) in bad_pipeline_inputs(export).items():
        error = remote["pipeline_errors"][name]
        assert error["type"] == "ValueError" and message in error["message"], (name, error)


@pytest.mark.slow
def test_remote_handler_raises_on_bad_requests(export, remote):
    """Issue 10 changed this: the handler raises (the Inference Toolkit answers 400 with the message) instead of
    returning an error body, which the toolkit would send with status 200."""
    for name, (_, message) in bad_handler_requests(export).items():
        error = remote["handler_errors"][name]
        assert error["type"] == "ValueError" and message in error["message"], (name, error)


@pytest.mark.slow
def test_remote_model_saves_again_complete(export, remote):
    resaved = Path(remote["resaved"])
    assert_hub_folder_complete(resaved, require_model_card=False)
    for name in CODE_FILES:
        assert (resaved / name).read_text() == (export.folder / name).read_text(), name


# ----- the pipeline and the handler in this process -----------------------------------------------------------
@pytest.fixture(scope="module")
def classify(export) -> ImageTextClassificationPipeline:
    return pipeline("image-text-classification", model=export.model, processor=export.processor, device="cpu")


def test_registered_pipeline_accepts_paths_arrays_and_pil_images(export, classify):
    assert isinstance(classify, ImageTextClassificationPipeline)
    image = PIL.Image.open(export.image_path)
    for given in (str(export.image_path), export.image_path, np.asarray(image.convert("RGB")), image):
        assert_same_ranking(classify({"image": given, "text": TEXT}), export.ranking)
    assert classify([]) == []
    assert len(classify({"image": image, "text": TEXT}, top_k=2)) == 2


@pytest.mark.parametrize("case", ["no_text", "empty_text", "missing_file", "unreadable_file", "image_type", "second_of_list", "not_a_pair"])
def test_pipeline_errors_name_the_input_and_the_problem(export, classify, case):
    inputs, message = bad_pipeline_inputs(export)[case]
    with pytest.raises(ValueError, match="image-text-classification") as error:
        classify(inputs)
    assert message in str(error.value)


def test_pipeline_rejects_bad_arrays_and_parameters(export, classify):
    with pytest.raises(ValueError, match="input 0: .*an image array must be uint8"):
        classify({"image": np.zeros((8, 8, 3), dtype=np.float32), "text": TEXT})
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        classify({"image": str(export.image_path), "text": TEXT}, top_k=0)
    with pytest.raises(TypeError, match="unexpected parameters"):
        classify({"image": str(export.image_path), "text": TEXT}, temperature=2.0)


# "not_an_image" passes the request parsing: the pipeline decodes images (see test_reliability_serving.py).
@pytest.mark.parametrize("case", ["no_inputs", "not_base64", "a_server_path", "no_image", "empty_list", "bad_parameter"])
def test_handler_request_errors(export, case):
    request, message = bad_handler_requests(export)[case]
    with pytest.raises(ValueError) as error:
        parse_request(request)
    assert message in str(error.value)


def test_handler_request_decodes_data_urls_and_keeps_parameters(export):
    encoded = "data:image/png;base64," + base64.b64encode(export.image_path.read_bytes()).decode()
    inputs, parameters = parse_request({"inputs": [{"image": encoded, "text": TEXT}], "parameters": {"top_k": 1}})
    assert inputs[0]["image"] == export.image_path.read_bytes() and inputs[0]["text"] == TEXT
    assert parameters == {"top_k": 1}


# ----- the model card -----------------------------------------------------------------------------------------
def test_model_card_metadata_round_trips(export):
    card = ModelCard.load(export.folder / "README.md")
    expected = eval_results_from_metrics(METRICS, DATASET_NAME, None)
    assert card.data.eval_results == expected
    assert card.data.model_name == "sppscl-default-synthetic-demo-set"
    # Issues 11 and 19: the Hub has no image-text classification task, so `other` (no wrong widget) and the widget off.
    assert card.data.pipeline_tag == "other" and card.data.to_dict()["inference"] is False
    assert {result.task_type for result in card.data.eval_results} == {"other"}
    assert card.data.library_name == "transformers"
    assert card.data.license == "apache-2.0" and card.data.base_model == BASE_MODELS
    assert {"sppscl", "sppscl-default", "multimodal", "sentiment-analysis"} <= set(card.data.tags)
    assert metadata_load(export.folder / "README.md")["model-index"][0]["name"] == card.data.model_name


def test_model_card_numbers_equal_the_metrics(export):
    by_name = {"Accuracy": "accuracy", "Weighted F1": "weighted_f1", "Macro F1": "macro_f1"}
    results = ModelCard.load(export.folder / "README.md").data.eval_results
    assert len(results) == 6
    for result in results:
        assert result.metric_value == METRICS[result.dataset_split][by_name[result.metric_name]]


def test_model_card_text(export):
    text = (export.folder / "README.md").read_text()
    for fragment in ("## Variant: `default`", "trust_remote_code=True", "Semi-Push-Pull Supervised Contrastive Learning for Image-Text",
                     "| test | 0.6990 | 0.6875 | 0.6401 |", "| learning_rate | 0.01 |", "handler.py"):
        assert fragment in text, fragment
    assert "Predictions depend on the batch" not in text


def test_paper_variant_card_warns_about_batch_dependence():
    card = build_model_card(tiny_model("paper").config, METRICS, {}, ["./local/bert"], "MVSA-Single", "user/mvsa")
    assert "Predictions depend on the batch" in card.text and "Predictions depend on padding" in card.text
    assert card.data.datasets == ["user/mvsa"] and card.data.base_model is None
    assert {"sppscl-paper"} <= set(card.data.tags)


def test_model_card_needs_the_headline_metrics():
    with pytest.raises(ValueError, match="lack \\['weighted_f1', 'macro_f1'\\]"):
        build_model_card(tiny_model().config, {"test": {"accuracy": 0.5}}, {}, [], DATASET_NAME)


# ----- pushing to the Hub (recorded, never sent) --------------------------------------------------------------
class RecordingHubApi:
    """Stands in for transformers' shared `HfApi`: records the calls that would reach the Hub."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, **kwargs):
        folder = Path(folder_path)
        try:
            complete = assert_hub_folder_complete(folder, ignore_patterns=ignore_patterns or ())
        except ValueError as error:
            complete = str(error)
        self.calls.append(("upload_folder", {
            "repo_id": repo_id,
            "files": hub_folder_files(folder, ignore_patterns or ()),
            "complete": complete,
            "sppscl_card": is_sppscl_card(folder / "README.md"),
            **kwargs,
        }))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")

    def create_commit(self, *, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", {"repo_id": repo_id, "files": sorted(op.path_in_repo for op in operations)}))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")

    def __getattr__(self, name):
        raise AssertionError(f"unexpected Hub call: {name}")


@pytest.fixture
def hub(monkeypatch) -> RecordingHubApi:
    api = RecordingHubApi()
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: api)
    monkeypatch.setattr(transformers.utils.hub, "hf_api", lambda: api)
    for method in ("create_repo", "upload_folder", "create_commit", "upload_file"):
        monkeypatch.setattr(HfApi, method, lambda *args, **kwargs: pytest.fail("a real Hub call"))
    return api


def push_with_trainer(trainer_class, export, output_dir: Path, arguments_class=TrainingArguments) -> None:
    arguments = arguments_class(
        output_dir=str(output_dir), push_to_hub=True, hub_model_id="user/sppscl-test", hub_private_repo=True, report_to=[]
    )
    trainer = trainer_class(model=export.model, args=arguments, processing_class=export.processor)
    write_model_card(output_dir, export.model.config, METRICS, TRAINING_SUMMARY, BASE_MODELS, DATASET_NAME, None)
    trainer.push_to_hub()


def test_trainer_push_to_hub_uploads_a_complete_folder(export, hub, tmp_path):
    push_with_trainer(Trainer, export, tmp_path / "run")
    (create_name, create), (upload_name, upload) = hub.calls
    assert create_name == "create_repo" and create["repo_id"] == "user/sppscl-test" and create["private"] is True
    assert upload_name == "upload_folder" and upload["repo_id"] == "user/sppscl-test"
    assert isinstance(upload["complete"], list), upload["complete"]
    assert MODEL_FILES | set(CODE_FILES) | {"README.md"} <= set(upload["files"])
    # The plain Trainer.push_to_hub writes its own generic card over ours; SppSclTrainer keeps ours.
    assert upload["sppscl_card"] is False


def test_sppscl_trainer_uploads_the_sppscl_card(export, hub, tmp_path):
    push_with_trainer(SppSclTrainer, export, tmp_path / "run", SppSclTrainingArguments)
    upload = dict(hub.calls)["upload_folder"]
    assert upload["sppscl_card"] is True and isinstance(upload["complete"], list)
    card = ModelCard.load(tmp_path / "run" / "README.md")
    assert card.data.eval_results == eval_results_from_metrics(METRICS, DATASET_NAME, None)


def test_save_pretrained_with_push_to_hub_uploads_the_code(export, hub, monkeypatch, tmp_path):
    monkeypatch.setattr(transformers.utils.hub, "create_and_tag_model_card", lambda *args, **kwargs: ModelCard("---\n---\n"))
    export.model.save_pretrained(tmp_path / "model", push_to_hub=True, repo_id="user/sppscl-model", private=True)
    export.processor.save_pretrained(tmp_path / "processor", push_to_hub=True, repo_id="user/sppscl-model")
    commits = [call for name, call in hub.calls if name == "create_commit"]
    assert [commit["repo_id"] for commit in commits] == ["user/sppscl-model"] * 2
    assert {"config.json", "model.safetensors", *CODE_FILES} <= set(commits[0]["files"])
    assert {"processor_config.json", "tokenizer.json", *CODE_FILES} <= set(commits[1]["files"])
    assert ("create_repo", {"repo_id": "user/sppscl-model", "private": True, "token": None, "exist_ok": True}) in hub.calls


def test_saved_code_files_are_the_package_files_unchanged(export):
    package = REPO_ROOT / "modeling_sppscl"
    for name in CODE_FILES:
        assert (export.folder / name).read_bytes() == (package / name).read_bytes(), name
