"""Checks of a saved SPP-SCL folder: does it hold everything a Hub repository needs to load and serve the model
where this package is not installed (weights, config with `auto_map` and `custom_pipelines`, processor, tokenizer,
code files, card)? And which files would an upload send?

The code files themselves are written by `save_pretrained` (see `modeling_sppscl.remote_code_sppscl`).
"""

import ast
import json
from collections.abc import Iterable
from pathlib import Path

from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

from ..remote_code_sppscl import CODE_FILES, CUSTOM_PIPELINES


# What transformers writes into config.json for the registered classes (`register_for_auto_class`).
AUTO_MAP = {"AutoConfig": "configuration_sppscl.SppSclConfig", "AutoModel": "modeling_sppscl.SppSclModel"}
PROCESSOR_AUTO_MAP = {"AutoProcessor": "processing_sppscl.SppSclProcessor"}
# What `Trainer.push_to_hub` leaves out of its upload (see `transformers.Trainer.push_to_hub`).
TRAINER_IGNORE_PATTERNS = ("_*", "checkpoint-*")
TOKENIZER_VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
OUR_PACKAGES = ("configuration_sppscl", "modeling_sppscl")


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
                    f"remote-code folder (its modules are {sorted(flat_modules)}); import them relatively"
                )


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
    "assert_hub_folder_complete",
    "hub_folder_files",
]
