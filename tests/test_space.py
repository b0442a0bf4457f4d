"""The Space app, for real: written for a saved model, launched on 127.0.0.1, called through `gradio_client`
(the same probabilities as `pipeline(...)`), looked at in headless Chromium."""

import ast
import configparser
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from huggingface_hub import SpaceCard
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from transformers import pipeline

from conftest import tiny_model, tiny_processor
from modeling_sppscl.hub.space import write_space


gradio_client = pytest.importorskip("gradio_client", reason="the Space test needs gradio and gradio_client: pip install '.[space]'")
pytest.importorskip("gradio", reason="the Space test needs gradio and gradio_client: pip install '.[space]'")

METRICS = {"validation": {"accuracy": 0.75, "weighted_f1": 0.7421, "macro_f1": 0.7012}}
PAIRS = [("a very good day with the dog", 1), ("the sad cat is not fine", 2)]
REPO_ROOT = Path(__file__).resolve().parents[1]


def random_image(seed: int) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    root = tmp_path_factory.mktemp("space")
    model = tiny_model("default", seed=3).eval()
    model.save_pretrained(root / "model")
    tiny_processor(root / "tokenizer").save_pretrained(root / "model")
    images = []
    for text, seed in PAIRS:
        images.append(root / f"photo_{seed}.png")
        random_image(seed).save(images[-1])
    labels = [model.config.id2label[index] for index in sorted(model.config.id2label)]
    write_space(root / "model" / "space", str(root / "model"), labels, "SPP-SCL test model", METRICS,
                examples=[(path, text) for path, (text, _) in zip(images, PAIRS)])
    return root, images


@pytest.fixture(scope="module")
def server(space):
    """The app, started as a Space starts it (`python app.py`), in a fresh process outside the repository."""
    root, _ = space
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(root / "modules"), TRANSFORMERS_VERBOSITY="error")
    log = (root / "app.log").open("w")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=root / "model" / "space", env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                client = gradio_client.Client(url, verbose=False)
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the app did not start:\n{(root / 'app.log').read_text()[-3000:]}")
                time.sleep(1)
        yield url, client
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_space_folder_has_metadata_and_examples(space):
    root, _ = space
    folder = root / "model" / "space"
    card = SpaceCard.load(folder / "README.md")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py"
    assert card.data.models is None  # a local model: no Hub repository to link
    settings = json.loads((folder / "space_config.json").read_text())
    assert settings["model"] == ".."
    assert [text for _, text in settings["examples"]] == [text for text, _ in PAIRS]
    assert all((folder / image).is_file() for image, _ in settings["examples"])
    assert "| validation | 0.7500 | 0.7421 | 0.7012 |" in settings["metrics_markdown"]


def third_party_modules(path: Path) -> set[str]:
    """The top-level modules that `path` imports by absolute name, the standard library's left out."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names)


def package_requirements(extra: str | None = None) -> dict[str, Requirement]:
    """setup.cfg's requirements (of `extra`, or the install ones), by canonical name."""
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    lines = setup["options.extras_require"][extra] if extra else setup["options"]["install_requires"]
    return {canonicalize_name(r.name): r for r in map(Requirement, lines.strip().splitlines())}


def test_space_installs_what_the_app_and_the_model_code_import(space):
    """The Space's requirements.txt names the distribution of every module that app.py and the model folder's code
    (loaded as remote code) import, gradio aside (the SDK brings it), with the package's own transformers floor;
    the SDK version is one the package's `space` extra accepts."""
    root, _ = space
    folder = root / "model" / "space"
    code = [folder / "app.py", *sorted((root / "model").glob("*.py"))]
    assert len(code) > 5  # the model's travelling files are there
    distributions = importlib.metadata.packages_distributions()
    needed = {canonicalize_name(name) for module in set().union(*map(third_party_modules, code)) for name in distributions[module]}
    required = {canonicalize_name(r.name): r for r in map(Requirement, (folder / "requirements.txt").read_text().split())}
    assert needed - {"gradio"} <= set(required), needed - set(required)
    floor = {str(spec) for spec in package_requirements()["transformers"].specifier if spec.operator == ">="}
    assert {str(spec) for spec in required["transformers"].specifier} == floor
    sdk_version = SpaceCard.load(folder / "README.md").data.sdk_version
    assert package_requirements("space")["gradio"].specifier.contains(sdk_version), sdk_version


def test_hub_model_is_linked_from_the_space_metadata(tmp_path):
    write_space(tmp_path, "you/sppscl-mvsa", ["positive", "negative"], "SPP-SCL on MVSA")
    assert SpaceCard.load(tmp_path / "README.md").data.models == ["you/sppscl-mvsa"]
    assert json.loads((tmp_path / "space_config.json").read_text())["model"] == "you/sppscl-mvsa"


@pytest.mark.slow
def test_app_answers_with_the_pipelines_probabilities(space, server):
    root, images = space
    _, client = server
    classify = pipeline(model=str(root / "model"), trust_remote_code=True, device="cpu")
    for image, (text, _) in zip(images, PAIRS):
        answer = client.predict(gradio_client.handle_file(str(image)), text, api_name="/predict")
        found = {entry["label"]: entry["confidence"] for entry in answer["confidences"]}
        expected = {entry["label"]: entry["score"] for entry in classify({"image": str(image), "text": text})}
        assert found.keys() == expected.keys()
        np.testing.assert_allclose([found[label] for label in expected], list(expected.values()), atol=1e-6, rtol=0)
        assert answer["label"] == max(expected, key=expected.get)


@pytest.mark.slow
def test_app_rejects_a_missing_text_with_a_message(space, server):
    _, images = space
    _, client = server
    with pytest.raises(Exception, match="Type the text"):
        client.predict(gradio_client.handle_file(str(images[0])), "  ", api_name="/predict")


@pytest.mark.slow
def test_headless_browser_shows_the_app(space, server, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium to look at the app with (apt-get install chromium)")
    url, _ = server
    screenshot = tmp_path / "space.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={screenshot}",
                    "--window-size=1280,1100", "--virtual-time-budget=20000", url], capture_output=True, timeout=180, check=True)
    pixels = np.asarray(PIL.Image.open(screenshot).convert("L"))
    assert pixels.shape == (1100, 1280)
    # A rendered page, not a blank one: several distinct grey levels over the page.
    assert len(np.unique(pixels)) > 20
    if os.environ.get("SPPSCL_SPACE_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["SPPSCL_SPACE_SCREENSHOT"])
