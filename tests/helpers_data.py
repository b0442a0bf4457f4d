"""Helpers shared by the data, metric and demo tests: where the real data lives, and small files to read."""

import json
import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`<shared>/data`, where `<shared>` is $SPPSCL_SHARED_DIR or the `shared` folder next to the repository."""
    shared = Path(os.environ["SPPSCL_SHARED_DIR"]) if os.environ.get("SPPSCL_SHARED_DIR") else REPO_ROOT.parent / "shared"
    return shared / "data"


def real_data_folder(name: str) -> Path:
    """A data set folder under the shared data; the test is skipped, saying why, when it is not there."""
    folder = shared_data_dir() / name
    if not folder.is_dir():
        pytest.skip(f"real data {folder} not found (set SPPSCL_SHARED_DIR to the folder holding data/)")
    return folder


def write_jpeg(path: Path, colour: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(np.full((size, size, 3), colour, dtype=np.uint8)).save(path, format="JPEG")
    return path


def write_json(path: Path, items) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def clmlf_items(labels: list[int], prefix: str = "") -> list[dict]:
    return [{"id": f"{prefix}{index}", "text": f"tweet number {index}", "emotion_label": label} for index, label in enumerate(labels)]


def write_clmlf_folder(folder: Path, splits: dict[str, list[dict]], image_folder: str | None = "images") -> Path:
    """A CLMLF-layout folder: `<split>.json` per split and a JPEG per id in `image_folder` (none if None)."""
    for file_name, items in splits.items():
        write_json(folder / f"{file_name}.json", items)
        if image_folder is not None:
            for item in items:
                write_jpeg(folder / image_folder / f"{item['id']}.jpg")
    return folder
