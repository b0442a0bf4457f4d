"""Self-contained save folders: the code files, `auto_map` and custom pipeline that let a folder (or a Hub repo
made from it) load with `trust_remote_code=True` where this package is not installed.

The package keeps its configuration in a separate top-level package and imports it absolutely
(`from configuration_sppscl import ...`). Remote code is a flat folder of modules that import each other
relatively, so the copies written here have those imports rewritten to `from .configuration_sppscl import ...`.
This module is itself one of the copied files: a model loaded as remote code can be saved again, complete.
"""

import ast
import copy
import inspect
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

# Besides their use below, these relative imports are what makes transformers copy every code file next to a
# remote-code copy of this module, so that a model loaded with trust_remote_code saves again complete.
from .handler import EndpointHandler
from .loss_sppscl import step_one_objective
from .modeling_sppscl import SppSclModel
from .pipeline_sppscl import PIPELINE_TASK, ImageTextClassificationPipeline
from .processing_sppscl import SppSclProcessor


AUTO_MAP = {
    "AutoConfig": "configuration_sppscl.SppSclConfig",
    "AutoModel": "modeling_sppscl.SppSclModel",
    "AutoProcessor": "processing_sppscl.SppSclProcessor",
}
PROCESSOR_AUTO_MAP = {"AutoProcessor": AUTO_MAP["AutoProcessor"]}
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {"impl": "pipeline_sppscl.ImageTextClassificationPipeline", "pt": ["AutoModel"], "type": "multimodal"}
}
HANDLER_FILE = "handler.py"
CODE_FILES = (
    "configuration_sppscl.py",
    "modeling_sppscl.py",
    "loss_sppscl.py",
    "processing_sppscl.py",
    "pipeline_sppscl.py",
    "hub_sppscl.py",
    HANDLER_FILE,
)
# What `Trainer.push_to_hub` leaves out of its upload (see `transformers.Trainer.push_to_hub`).
TRAINER_IGNORE_PATTERNS = ("_*", "checkpoint-*")
TOKENIZER_VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
OUR_PACKAGES = ("configuration_sppscl", "modeling_sppscl")
# Keyword arguments of `save_pretrained` that only matter for its `push_to_hub=True` upload.
PUSH_KWARGS = ("repo_id", "commit_message", "commit_description", "private", "token", "revision", "create_pr")

_ABSOLUTE_CONFIG_IMPORT = re.compile(r"^(\s*)from\s+configuration_sppscl(?:\.configuration_sppscl)?\s+import\b", re.MULTILINE)
_ABSOLUTE_MODELING_IMPORT = re.compile(r"^(\s*)from\s+modeling_sppscl\.(\w+)\s+import\b", re.MULTILINE)


# ----- code files --------------------------------------------------------------------------------------------
def code_sources() -> dict[str, Path]:
    """Where each file of the remote code comes from, keyed by its name in a saved folder.

    Works from the installed packages and from a remote-code copy, where all the files sit side by side.
    """
    defining = (SppSclModel.config_class, SppSclModel, step_one_objective, SppSclProcessor, ImageTextClassificationPipeline, EndpointHandler)
    paths = [Path(inspect.getsourcefile(item)) for item in defining] + [Path(__file__)]
    sources = {path.name: path for path in paths}
    if sorted(sources) != sorted(CODE_FILES):
        raise RuntimeError(f"The remote code files are {sorted(CODE_FILES)} but the sources found are {sorted(sources)}")
    return sources


def flat_source(source: str, file_name: str) -> str:
    """`source` with the absolute imports of our packages made relative, as a flat remote-code folder needs."""
    flat = _ABSOLUTE_CONFIG_IMPORT.sub(r"\1from .configuration_sppscl import", source)
    flat = _ABSOLUTE_MODELING_IMPORT.sub(r"\1from .\2 import", flat)
    _check_flat_imports(flat, file_name)
    return flat


def _check_flat_imports(source: str, file_name: str) -> None:
    """Fail on imports a flat folder cannot satisfy: our packages by absolute name, or a module it lacks."""
    flat_modules = {Path(name).stem for name in CODE_FILES}
    for node in ast.walk(ast.parse(source, filename=file_name)):
        if isinstance(node, ast.Import):
            modules = [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [(node.module or "", node.level)]
        else:
            continue
        for module, level in modules:
            top = module.split(".")[0]
            if (level == 0 and top in OUR_PACKAGES) or (level > 0 and top not in flat_modules):
                raise ValueError(
                    f"{file_name}, line {node.lineno}: the import of {'.' * level}{module} cannot work in a flat "
                    f"remote-code folder (its modules are {sorted(flat_modules)}); import them as "
                    "`from configuration_sppscl import ...` or relatively"
                )


def write_code_files(folder: str | Path) -> list[Path]:
    """Write the flat remote code (and `handler.py` for Inference Endpoints) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in code_sources().items():
        target = folder / name
        target.write_text(flat_source(source.read_text(encoding="utf-8"), name), encoding="utf-8")
        written.append(target)
    return written


# ----- save_pretrained hooks ---------------------------------------------------------------------------------
def add_remote_code_entries(config: Any) -> None:
    """Point `config`'s `auto_map` at the flat code files and declare the custom pipeline."""
    config.auto_map = {**(getattr(config, "auto_map", None) or {}), **AUTO_MAP}
    # A fresh copy: `pipeline()` replaces the class names in a loaded config's entry by classes, which JSON can't hold.
    config.custom_pipelines = copy.deepcopy(CUSTOM_PIPELINES)


def _pop_push_kwargs(kwargs: dict[str, Any], push_to_hub: bool) -> dict[str, Any] | None:
    if not push_to_hub:
        return None
    return {name: kwargs.pop(name) for name in PUSH_KWARGS if name in kwargs}


def _push_saved_folder(owner: Any, save_directory: str | Path, push_kwargs: dict[str, Any] | None) -> None:
    # `save_pretrained(push_to_hub=True)` uploads before the code files exist; `push_to_hub` saves again (through
    # the same hook) into a fresh folder and uploads all of it.
    if push_kwargs is not None:
        owner.push_to_hub(push_kwargs.pop("repo_id", Path(save_directory).name), **push_kwargs)


def save_model_with_code(
    model: Any, save: Callable[..., Any], save_directory: str | Path, is_main_process: bool = True, push_to_hub: bool = False, **kwargs
) -> Any:
    """`PreTrainedModel.save_pretrained` (`save`) plus the remote code; called by `SppSclModel.save_pretrained`."""
    push_kwargs = _pop_push_kwargs(kwargs, push_to_hub)
    add_remote_code_entries(model.config)
    saved = save(save_directory, is_main_process=is_main_process, **kwargs)
    if model.should_save_on_this_rank(is_main_process):
        write_code_files(save_directory)
        _push_saved_folder(model, save_directory, push_kwargs)
    return saved


def save_processor_with_code(
    processor: Any, save: Callable[..., Any], save_directory: str | Path, push_to_hub: bool = False, **kwargs
) -> Any:
    """`ProcessorMixin.save_pretrained` (`save`) plus the remote code and the `auto_map` of
    `processor_config.json`; called by `SppSclProcessor.save_pretrained`."""
    push_kwargs = _pop_push_kwargs(kwargs, push_to_hub)
    # `ProcessorMixin.to_dict` keeps an `auto_map` attribute, and its loader ignores it again.
    processor.auto_map = dict(PROCESSOR_AUTO_MAP)
    saved = save(save_directory, **kwargs)
    write_code_files(save_directory)
    _push_saved_folder(processor, save_directory, push_kwargs)
    return saved


# ----- checks ------------------------------------------------------------------------------------------------
def hub_folder_files(folder: str | Path, ignore_patterns: Iterable[str] = TRAINER_IGNORE_PATTERNS) -> list[str]:
    """The files (relative POSIX paths) that `upload_folder` would send from `folder`, as `Trainer.push_to_hub`
    calls it by default; pass `ignore_patterns=()` for a plain `upload_folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    paths = sorted(path.relative_to(folder).as_posix() for path in folder.glob("**/*") if path.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=[*ignore_patterns, *DEFAULT_IGNORE_PATTERNS]))


def _read_json(folder: Path, name: str, problems: list[str]) -> dict:
    try:
        return json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        problems.append(f"{name} cannot be read: {error}")
        return {}


def _missing_entries(found: dict, expected: dict, where: str) -> list[str]:
    return [f"{where} lacks {key}: {value!r}" for key, value in expected.items() if found.get(key) != value]


def _weight_problems(folder: Path, files: set[str], problems: list[str]) -> None:
    if "model.safetensors" in files:
        return
    if "model.safetensors.index.json" not in files:
        problems.append("model.safetensors (or model.safetensors.index.json with its shards)")
        return
    shards = set(_read_json(folder, "model.safetensors.index.json", problems).get("weight_map", {}).values())
    problems.extend(f"{shard} (listed in model.safetensors.index.json)" for shard in sorted(shards - files))


def _config_problems(folder: Path, problems: list[str]) -> None:
    config = _read_json(folder, "config.json", problems)
    problems.extend(_missing_entries(config.get("auto_map") or {}, AUTO_MAP, "config.json auto_map"))
    problems.extend(_missing_entries(config.get("custom_pipelines") or {}, CUSTOM_PIPELINES, "config.json custom_pipelines"))


def _processor_problems(folder: Path, files: set[str], problems: list[str]) -> None:
    processor = _read_json(folder, "processor_config.json", problems)
    problems.extend(_missing_entries(processor.get("auto_map") or {}, PROCESSOR_AUTO_MAP, "processor_config.json auto_map"))
    if "image_processor" not in processor and "preprocessor_config.json" not in files:
        problems.append("the image processor (in processor_config.json or preprocessor_config.json)")
    if not files & set(TOKENIZER_VOCABULARY_FILES):
        problems.append(f"a tokenizer vocabulary (one of {', '.join(TOKENIZER_VOCABULARY_FILES)})")


def _code_problems(folder: Path, files: set[str], problems: list[str]) -> None:
    for name in CODE_FILES:
        if name not in files:
            continue
        try:
            _check_flat_imports((folder / name).read_text(encoding="utf-8"), name)
        except (SyntaxError, ValueError) as error:
            problems.append(f"{name} is not usable as remote code: {error}")


def assert_hub_folder_complete(
    folder: str | Path, require_model_card: bool = True, ignore_patterns: Iterable[str] = TRAINER_IGNORE_PATTERNS
) -> list[str]:
    """Check that `folder` holds everything a Hub repo needs to load without this package; returns the files an
    upload would send and raises `ValueError` naming every missing file or entry."""
    folder = Path(folder)
    uploaded = hub_folder_files(folder, ignore_patterns)
    files = set(uploaded)
    required = ["config.json", "processor_config.json", "tokenizer_config.json", *CODE_FILES]
    required += ["README.md"] if require_model_card else []
    problems = [name for name in required if name not in files]
    _weight_problems(folder, files, problems)
    if "config.json" in files:
        _config_problems(folder, problems)
    if "processor_config.json" in files:
        _processor_problems(folder, files, problems)
    _code_problems(folder, files, problems)
    if problems:
        raise ValueError(f"{folder} is not a complete SPP-SCL Hub folder; missing or wrong: " + "; ".join(problems))
    return uploaded


__all__ = [
    "AUTO_MAP",
    "CODE_FILES",
    "CUSTOM_PIPELINES",
    "add_remote_code_entries",
    "assert_hub_folder_complete",
    "code_sources",
    "flat_source",
    "hub_folder_files",
    "save_model_with_code",
    "save_processor_with_code",
    "write_code_files",
]
