"""Loading: a YAML file and explicit values in, one validated `TrainConfig` out.

Precedence is explicit values (command-line flags, keyword overrides) > the YAML file >
`TrainConfig` defaults. Errors are `ConfigError`s that name the file, the line and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kronos_engine import fsio
from kronos_engine.config.schema import TrainConfig, coerce, field_type, unwrap_optional
from kronos_engine.errors import ConfigError


def config_keys() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)}


def read_yaml_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Keys and converted values of a config file; errors name the file and the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config: file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config: cannot read '{path}' ({exc})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise ConfigError(f"{where}: invalid YAML ({problem})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        return {}
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value pairs at the top level")
    keys = config_keys()
    lines: dict[str, int] = {}
    texts: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key, line = str(key_node.value), key_node.start_mark.line + 1
        if key in lines:
            raise ConfigError(
                f"{path}:{line}: key '{key}' appears twice (first on line {lines[key]})"
            )
        lines[key] = line
        texts[key] = _source_text(value_node)
    values: dict[str, Any] = {}
    for key, value in data.items():
        line = lines.get(str(key), 0)
        if key not in keys:
            hint = difflib.get_close_matches(str(key), sorted(keys), n=1)
            close = f"; did you mean '{hint[0]}'?" if hint else ""
            raise ConfigError(
                f"{path}:{line}: unknown key '{key}'{close} (see params.md for the keys)"
            )
        if value is not None and _is_text_key(key) and texts.get(key) is not None:
            # YAML 1.1 reads `000010` as the octal number 8: a key that holds text (symbols,
            # paths, dates) takes the characters as written.
            value = texts[key]
        try:
            values[key] = coerce(key, value, field_type(key))
        except ConfigError as exc:
            raise ConfigError(f"{path}:{line}: {exc}") from None
    return values


def _source_text(node: yaml.Node) -> Any:
    """A plain scalar's characters as written (a list of them for a flat sequence)."""
    if isinstance(node, yaml.ScalarNode):
        return node.value
    if isinstance(node, yaml.SequenceNode) and all(
        isinstance(n, yaml.ScalarNode) for n in node.value
    ):
        return [n.value for n in node.value]
    return None


def _is_text_key(key: str) -> bool:
    tp, _ = unwrap_optional(field_type(key))
    if typing.get_origin(tp) is list:
        (tp,) = typing.get_args(tp)
    return tp is str


def merged_values(
    config_file: str | os.PathLike[str] | None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The YAML file's values (none without a file) updated with the explicit `overrides`."""
    values = read_yaml_config(config_file) if config_file else {}
    values.update(overrides or {})
    return values


def load_config(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """The validated config of defaults < `config_file` < `overrides` (no file checks: `check`)."""
    return TrainConfig.from_dict(merged_values(config_file, overrides))


# Where this invocation continued from: not part of the run a `config.yaml` describes (a
# resumed run's files read as one uninterrupted run's). Kept, `--config <run>/config.yaml`
# would resume again, and the predictor command printed after a resumed tokenizer run would
# inherit the tokenizer's checkpoint.
NOT_RECORDED = ("resume",)


def write_config(path: Path, cfg: TrainConfig) -> None:
    """`config.yaml`: the resolved config, written atomically (a run's or a checkpoint's);
    `resume` is written as null (`NOT_RECORDED`)."""
    values = {**cfg.to_dict(), **dict.fromkeys(NOT_RECORDED)}
    fsio.atomic_write(path, lambda fh: yaml.safe_dump(values, fh, sort_keys=False))
