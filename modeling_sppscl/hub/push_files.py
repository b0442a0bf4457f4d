"""Which files of a run a push to the Hub sends: the model, and only the model.

One list for every upload `SppSclTrainer` makes, the final `push_to_hub` and the per-checkpoint pushes alike.
Anything that is not listed stays local: predictions, `data_report.json`, plots (unless `--push_run_outputs`),
the Space (`--push_space` sends it to its own repository), feature caches, checkpoints outside `hub_strategy`'s
own upload, and `training_args.bin` (it pickles the arguments, `--hub_token` included).

Patterns are `upload_folder`'s (`fnmatch`, where `*` also matches `/`), applied to paths relative to the pushed
folder; only that folder's own files go, never a subfolder's.
"""

from collections.abc import Iterable
from pathlib import Path

from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

from ..remote_code_sppscl import CODE_FILES


# Whole or sharded, safetensors or torch.
WEIGHT_PATTERNS = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json")
PROCESSOR_PATTERNS = (
    "processor_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "*.model", "chat_template.*",
)
MODEL_PATTERNS = (*WEIGHT_PATTERNS, "config.json", "generation_config.json", *PROCESSOR_PATTERNS, *CODE_FILES)
CARD_AND_METRICS_PATTERNS = ("README.md", "*_results.json", "trainer_state.json")
# What a checkpoint adds to resume from it, for hub_strategy "checkpoint" / "all_checkpoints".
RESUME_PATTERNS = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")
RUN_OUTPUT_PATTERNS = ("predictions_*.csv", "data_report.json", "*.png")
SUBFOLDERS = ("*/*",)

# The three uploads: the final folder, a checkpoint's model to the repository root, a checkpoint to its subfolder.
FINAL_PUSH = (*MODEL_PATTERNS, *CARD_AND_METRICS_PATTERNS)
CHECKPOINT_MODEL_PUSH = MODEL_PATTERNS
CHECKPOINT_RESUME_PUSH = (*MODEL_PATTERNS, *RESUME_PATTERNS)


def upload_patterns(allow: Iterable[str]) -> dict[str, list[str]]:
    """`allow_patterns` / `ignore_patterns` for `upload_folder` (fresh lists: `upload_folder` extends the latter)."""
    return {"allow_patterns": list(allow), "ignore_patterns": list(SUBFOLDERS)}


def pushed_files(folder: str | Path, allow: Iterable[str]) -> list[str]:
    """The files `upload_folder(folder_path=folder, **upload_patterns(allow))` sends, as it selects them."""
    folder = Path(folder)
    paths = sorted(path.relative_to(folder).as_posix() for path in folder.glob("**/*") if path.is_file())
    patterns = upload_patterns(allow)
    return list(filter_repo_objects(paths, allow_patterns=patterns["allow_patterns"],
                                    ignore_patterns=patterns["ignore_patterns"] + DEFAULT_IGNORE_PATTERNS))
