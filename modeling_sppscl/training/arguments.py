"""The command line of `run_sppscl.py`: user errors, `--help` grouped and ordered, which options a command line sets,
presets (the demo, the recipes) filled in around them, and every option checked before any work.

A user error (a flag, the data, a file, the Hub) ends the run with one message and no traceback; a bug keeps its
traceback. `UsageError` is a bad command line (exit 2, as argparse's own errors), `UserError` any other user error
(exit 1).
"""

import argparse
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import Any

from transformers import HfArgumentParser

from ..configuration_sppscl import CHOICES, SppSclConfig


class UserError(ValueError):
    """Input the user can fix: shown as one message, without traceback; exit status 1."""

    exit_code = 1


class UsageError(UserError):
    """A command line that cannot run: exit status 2."""

    exit_code = 2


@contextmanager
def user_errors(what: str | None = None, kinds: tuple[type[BaseException], ...] = (ValueError, OSError), error_type=UserError):
    """Turn the `kinds` raised inside into `error_type` (prefixed with `what`): for steps whose only failures are
    bad input (reading the data, loading a tower, importing --tower_module), whose errors already say what is wrong."""
    try:
        yield
    except UserError:
        raise
    except kinds as error:
        message = str(error).strip() or type(error).__name__
        raise error_type(f"{what}: {message}" if what else message) from error


# ----- --help ---------------------------------------------------------------------------------------------------------
class ArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose errors are `UsageError`s (one line, no usage block), and whose `--help` shows the
    groups given to `group_options` first."""

    def error(self, message: str):
        raise UsageError(message)


def group_options(parser: argparse.ArgumentParser, groups: Sequence[tuple[str, Iterable[str]]], rest_title: str) -> None:
    """Show the options whose destinations each group names under that group's title, in the given order; the
    options left over follow under `rest_title`. Only the display changes: parsing reads every option as before."""
    optionals = parser._optionals._group_actions
    for title, destinations in [*groups, (rest_title, None)]:
        wanted = set(destinations) if destinations is not None else None
        moved = [action for action in optionals if action.dest != "help" and (wanted is None or action.dest in wanted)]
        group = parser.add_argument_group(title)
        group._group_actions.extend(moved)
        optionals[:] = [action for action in optionals if action not in moved]


# ----- what a command line sets --------------------------------------------------------------------------------------
def explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, Any]:
    """The options `argv` gives a value, with that value, however spelled (`--no_x`, `--x=1`, dashes,
    abbreviations): parsed with every default suppressed, only those are left."""
    defaults = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in defaults:
            action.default = argparse.SUPPRESS
        namespace, _ = parser.parse_known_args(list(argv))
    finally:
        for action, default in defaults:
            action.default = default
    return vars(namespace)


def as_flags(values: dict[str, Any]) -> list[str]:
    """`{name: value}` (an ARGS.json file, a preset) as command-line words: booleans as true/false, which
    `HfArgumentParser` reads, lists as several words, dicts as JSON; None leaves the option at its default."""
    if not isinstance(values, dict):
        raise UsageError(f"expected a JSON object of option: value, got {type(values).__name__}")
    words = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, list):
            words += [f"--{name}", *map(str, value)]
        else:
            text = json.dumps(value) if isinstance(value, dict) else str(value).lower() if isinstance(value, bool) else str(value)
            words += [f"--{name}", text]
    return words


# ----- checks ---------------------------------------------------------------------------------------------------------
def check_numbers(model_args, data_args, training_args) -> None:
    """Every numeric option in its range, before anything is loaded (torch's own errors came after extraction)."""
    problems = []

    def need(ok: bool, flag: str, value: Any, rule: str) -> None:
        if not ok:
            problems.append(f"{flag} must be {rule}, got {value!r}")

    def finite(value: Any) -> bool:
        return isinstance(value, (int, float)) and math.isfinite(value)

    epochs = training_args.num_train_epochs
    if training_args.max_steps <= 0:
        need(finite(epochs) and epochs > 0, "--num_train_epochs", epochs, "a number > 0 (or set --max_steps)")
    for flag in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        need(getattr(training_args, flag) >= 1, f"--{flag}", getattr(training_args, flag), "an integer >= 1")
    for flag in ("learning_rate", "tower_learning_rate"):
        value = getattr(training_args, flag)
        if value is not None:
            need(finite(value) and value > 0, f"--{flag}", value, "a finite number > 0")
    need(finite(training_args.weight_decay) and training_args.weight_decay >= 0, "--weight_decay", training_args.weight_decay, "a finite number >= 0")
    need(training_args.warmup_steps >= 0, "--warmup_steps", training_args.warmup_steps, ">= 0")
    need(training_args.dataloader_num_workers >= 0, "--dataloader_num_workers", training_args.dataloader_num_workers, "an integer >= 0")
    for flag in ("max_train_samples", "max_eval_samples", "max_predict_samples", "head_num_threads"):
        value = getattr(data_args, flag)
        if value is not None:
            need(value >= 1, f"--{flag}", value, "an integer >= 1 (or left out)")
    if problems:
        raise UsageError("; ".join(problems))


# `SppSclConfig` attributes with a flag of their own, or set from the towers.
CONFIG_KEYS_WITH_FLAGS = {"variant": "--variant", "freeze_text_model": "--freeze_text_model",
                          "freeze_vision_model": "--freeze_vision_model", "text_config": "--text_model_name_or_path",
                          "vision_config": "--vision_model_name_or_path"}


def config_override_types() -> dict[str, Any]:
    """The keys `--config_overrides` takes, with their annotated types (a rule name is allowed for class_weights)."""
    own = {name: kind for name, kind in SppSclConfig.__annotations__.items() if typing.get_origin(kind) is not typing.ClassVar}
    return {name: kind for name, kind in own.items() if name not in CONFIG_KEYS_WITH_FLAGS}


def type_name(kind: Any) -> str:
    return kind.__name__ if isinstance(kind, type) else str(kind).replace("NoneType", "None")


def fits_type(value: Any, kind: Any) -> bool:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return any(fits_type(value, option) for option in typing.get_args(kind))
    if typing.get_origin(kind) is list:
        return isinstance(value, list) and all(fits_type(item, typing.get_args(kind)[0]) for item in value)
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def parse_config_overrides(text: str | None) -> dict:
    """`--config_overrides` as a dict: `name=value` items, commas between; values are JSON, else a bare string."""
    overrides = {}
    # Commas inside brackets belong to a list value (class_weights=[1,2,1]).
    for item in filter(None, re.split(r",(?![^\[]*\])", text or "")):
        if "=" not in item:
            raise UsageError(f"--config_overrides: expected name=value, got {item!r}")
        name, value = item.split("=", 1)
        try:
            overrides[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name.strip()] = value
    return overrides


def check_config_overrides(overrides: dict[str, Any], rules: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """Refuse an unknown key (naming the valid ones) or a value of the wrong type or choice (naming the key and
    its type); `rules` are the rule names a key also takes (`class_weights=rarest_x2`). Return them, integers
    given for float keys as floats."""
    known = config_override_types()
    checked = {}
    for key, value in overrides.items():
        if key in CONFIG_KEYS_WITH_FLAGS:
            raise UsageError(f"--config_overrides: {key} is set with {CONFIG_KEYS_WITH_FLAGS[key]}, not here")
        if key not in known:
            listed = ", ".join(f"{name} ({type_name(kind)})" for name, kind in known.items())
            raise UsageError(f"--config_overrides: unknown key {key!r}; the keys are: {listed}")
        kind = known[key]
        allowed = CHOICES.get(key, ()) + rules.get(key, ())
        if not (fits_type(value, kind) or value in allowed):
            also = f" or one of {allowed}" if allowed else ""
            raise UsageError(f"--config_overrides: {key} must be {type_name(kind)}{also}, got {value!r}")
        if CHOICES.get(key) and value is not None and value not in CHOICES[key]:
            raise UsageError(f"--config_overrides: {key} must be one of {CHOICES[key]}, got {value!r}")
        checked[key] = float(value) if kind is float else value
    return checked


def config_error(error: ValueError) -> UsageError:
    """A config that does not fit (a value out of range, more text layers than the tower has), as a refusal naming
    the override that fixes it."""
    match = re.search(r"SppSclConfig\.(\w+)", str(error))
    if match is None:  # a refusal of a tower itself, which says what to use instead
        return UsageError(str(error))
    key = match.group(1)
    fix = f"change {CONFIG_KEYS_WITH_FLAGS[key]}" if key in CONFIG_KEYS_WITH_FLAGS else f"pass --config_overrides {key}=VALUE with a value in that range"
    return UsageError(f"{error}: {fix}")


__all__ = [
    "ArgumentParser", "UsageError", "UserError", "as_flags", "check_config_overrides", "check_numbers", "config_error",
    "explicit_options", "group_options", "parse_config_overrides", "user_errors",
]
