"""Gradio app of a Hugging Face Space for an SPP-SCL model: an image and its text in, a probability per class out.

The model loads as remote code (`trust_remote_code=True`) from the repository named in `space_config.json`, or
from `$SPPSCL_MODEL` (a Hub id or a local folder, for trying the app before the model is pushed). A private
model needs an `HF_TOKEN` secret in the Space's settings.
"""

import json
import os
from pathlib import Path

import gradio as gr
from transformers import pipeline


HERE = Path(__file__).resolve().parent
SETTINGS = json.loads((HERE / "space_config.json").read_text())


def model_location() -> str:
    """`$SPPSCL_MODEL`, else the configured model: a folder relative to this app (a local run) or a Hub id."""
    location = os.environ.get("SPPSCL_MODEL") or SETTINGS["model"]
    local = HERE / location
    return str(local.resolve()) if local.is_dir() else location


classifier = pipeline(model=model_location(), trust_remote_code=True, device="cpu")


def classify(image, text: str) -> dict[str, float]:
    """The probability of each class; what the pipeline refuses (an unreadable image, a text with nothing to read)
    is shown to the user as the pipeline's message."""
    if image is None:
        raise gr.Error("Upload an image: the model classifies an image together with its text.")
    if not isinstance(text, str) or not text.strip():
        raise gr.Error("Type the text that goes with the image.")
    try:
        scores = classifier({"image": image, "text": text})
    except ValueError as error:
        raise gr.Error(str(error)) from error
    return {entry["label"]: entry["score"] for entry in scores}


demo = gr.Interface(
    fn=classify,
    inputs=[gr.Image(type="pil", label="Image"), gr.Textbox(label="Text", lines=2)],
    outputs=gr.Label(label="Probability per class", num_top_classes=len(SETTINGS["labels"])),
    title=SETTINGS["title"],
    description=SETTINGS["description"],
    article=SETTINGS["metrics_markdown"],
    examples=[[str(HERE / image), text] for image, text in SETTINGS["examples"]] or None,
    cache_examples=False,
    flagging_mode="never",
    api_name="predict",
)

if __name__ == "__main__":
    demo.launch()  # address and port from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, as a Space sets them
