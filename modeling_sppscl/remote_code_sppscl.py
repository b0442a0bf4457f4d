"""The code files that a saved SPP-SCL folder carries, so that it (or a Hub repo made from it) loads with
`trust_remote_code=True` where this package is not installed.

These files sit side by side and import each other relatively, in the package as in a saved folder, so they are
copied byte for byte. transformers copies a registered class's module and its relative imports when it saves
(`custom_object_save`); `save_with_code_files` adds the others, so that a model or a processor saved alone still
brings every file, the pipeline and the Inference Endpoints handler included.
"""

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Imported so that transformers, which copies the relative imports of remote code into its module cache, brings
# the handler along: a model loaded as remote code then saves again complete.
from .handler import EndpointHandler  # noqa: F401


PIPELINE_TASK = "image-text-classification"
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {"impl": "pipeline_sppscl.ImageTextClassificationPipeline", "pt": ["AutoModel"], "type": "multimodal"}
}
HANDLER_FILE = "handler.py"
CODE_FILES = (
    "configuration_sppscl.py",
    "modeling_sppscl.py",
    "loss_sppscl.py",
    "processing_sppscl.py",
    "image_utils_sppscl.py",
    "pipeline_sppscl.py",
    "remote_code_sppscl.py",
    "towers_sppscl.py",
    HANDLER_FILE,
)
# Keyword arguments of `save_pretrained` that only matter for its `push_to_hub=True` upload.
PUSH_KWARGS = ("repo_id", "commit_message", "commit_description", "private", "token", "revision", "create_pr")


def custom_pipelines() -> dict[str, dict[str, Any]]:
    """The `custom_pipelines` entry of a saved config.json (a fresh copy: `pipeline()` replaces the class names
    in a loaded config's entry by classes, which JSON cannot hold)."""
    return copy.deepcopy(CUSTOM_PIPELINES)


def copy_code_files(folder: str | Path) -> list[Path]:
    """Copy the code files found beside this module into `folder`, unchanged."""
    here = Path(__file__).resolve().parent
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in CODE_FILES:
        if (here / name).is_file() and (here / name).resolve() != (folder / name).resolve():
            shutil.copyfile(here / name, folder / name)
            copied.append(folder / name)
    return copied


def save_with_code_files(
    owner: Any, save: Callable[..., Any], save_directory: str | Path, write_files: bool = True, push_to_hub: bool = False, **kwargs
) -> Any:
    """`save(save_directory, **kwargs)` (a `save_pretrained`) plus the code files.

    `save_pretrained(push_to_hub=True)` uploads before anything is added to the folder, so the upload is done here
    instead, through `owner.push_to_hub`, which saves again (through this function) into a fresh folder.
    """
    push_kwargs = {name: kwargs.pop(name) for name in PUSH_KWARGS if name in kwargs} if push_to_hub else None
    saved = save(save_directory, **kwargs)
    if write_files:
        copy_code_files(save_directory)
        if push_kwargs is not None:
            owner.push_to_hub(push_kwargs.pop("repo_id", Path(save_directory).name), **push_kwargs)
    return saved
