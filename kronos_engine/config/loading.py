"""Loading: a YAML file and explicit values in, one validated `TrainConfig` out.

Precedence is explicit values (command-line flags, keyword overrides) > the YAML file >
`TrainConfig` defaults. Errors are `ConfigError`s that name the file, the line and the key.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kronos_engine import fsio
from kronos_engine.config import public
from kronos_engine.config.schema import TrainConfig, coerce, field_type, unwrap_optional
from kronos_engine.errors import ConfigError, ConfigLineError, did_you_mean

log = logging.getLogger("kronos_engine")


def config_keys() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)}


@dataclass
class ConfigLayers:
    """A config file's values: `shared` by every stage, each stage's section (`tokenizer:`,
    `predictor:`) over them, the pipeline options a public file sets (`skip_tokenizer`, ...)
    and the public names it read as ours (`notes`, logged once)."""

    shared: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    pipeline: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # the `sweep:` section as written (read by scripts/sweep.py, `kronos_engine.sweep.spec`) and
    # where it is (`file:line`), for its error lines; None when the file has none
    sweep: Any = None
    sweep_where: str = ""

    def values(self, stage: str | None = None) -> dict[str, Any]:
        """The values of one stage (`train_type`): the shared ones, its section over them."""
        return {**self.shared, **self.stages.get(stage or "", {})}


def read_yaml_config(path: str | os.PathLike[str], stage: str | None = None) -> dict[str, Any]:
    """Keys and converted values of a config file (with `stage`'s section applied); errors name
    the file and the line."""
    return read_config_layers(path).values(stage)


def read_config_layers(path: str | os.PathLike[str]) -> ConfigLayers:
    """A config file in our layout (flat keys, optional `tokenizer:`/`predictor:` sections),
    the public `finetune_csv` layout or with `finetune/config.py` names, as `ConfigLayers`.
    Every unknown key is named in one error, each with what to write instead."""
    path = Path(path)
    node, data = _parse(path)
    if data is None:
        return ConfigLayers()
    sweep, sweep_where = _sweep_section(path, node, data)
    data = {name: value for name, value in data.items() if name != SWEEP_SECTION}
    keys = config_keys()
    out = public.Translation()
    try:
        own = _translate(path, node, data, out, keys)
    except ConfigLineError as exc:
        raise ConfigError(f"{path}:{exc}") from None
    if out.unknown:
        raise ConfigError(_unknown_message(path, out.unknown, keys))
    layers = ConfigLayers(pipeline=dict(out.pipeline), notes=list(out.notes))
    layers.sweep, layers.sweep_where = sweep, sweep_where
    origins: dict[tuple[str | None, str], tuple[str, int]] = {}
    for stage, key, value, origin, line, text in own + out.settings:
        first = origins.setdefault((stage, key), (origin, line))
        if first != (origin, line):
            where = f"'{stage}.{key}'" if stage else f"'{key}'"
            raise ConfigError(
                f"{path}:{line}: {where} is set twice, by '{first[0]}' (line {first[1]}) and "
                f"by '{origin}'; keep one"
            )
        if value is not None and _is_text_key(key) and text is not None:
            # YAML 1.1 reads `000010` as the octal number 8: a key that holds text (symbols,
            # paths, dates) takes the characters as written.
            value = text
        try:
            value = coerce(key, value, field_type(key))
        except ConfigError as exc:
            named = f"{origin} -> " if origin != key else ""
            raise ConfigError(f"{path}:{line}: {named}{exc}") from None
        target = layers.stages.setdefault(stage, {}) if stage else layers.shared
        target[key] = value
    return layers


SWEEP_SECTION = "sweep"  # the search of scripts/sweep.py; no run reads it


def _sweep_section(path: Path, node: yaml.Node, data: Mapping[Any, Any]) -> tuple[Any, str]:
    """The `sweep:` section's value and `file:line` (None, "" without one); its keys are
    checked by `kronos_engine.sweep.spec`, where they mean something."""
    if SWEEP_SECTION not in data:
        return None, ""
    line = next(k.start_mark.line + 1 for k, _ in node.value if str(k.value) == SWEEP_SECTION)
    return data[SWEEP_SECTION], f"{path}:{line}"


def _translate(
    path: Path, node: yaml.Node, data: Mapping[Any, Any], out: public.Translation, keys: set[str]
) -> list[tuple[str | None, str, Any, str, int, Any]]:
    """Our own keys of the file as settings; public names and unknown keys go into `out`."""
    top = _entries(node, data, path)
    own: list[tuple[str | None, str, Any, str, int, Any]] = []
    csv_entries: dict[str, public.Entry] = {}
    csv_layout = public.is_finetune_csv(data)
    for name, entry in top.items():
        if name in public.STAGE_NAMES:
            own += _section(path, node, entry, keys, out)
        elif csv_layout and name in public.CSV_SECTIONS and isinstance(entry.value, Mapping):
            csv_entries.update(_entries(_child(node, name), entry.value, path, f"{name}."))
        elif csv_layout and name in public.CSV_SECTIONS and entry.value is None:
            continue  # an empty public section (`experiment:` with its keys commented out)
        elif name in keys:
            own.append((None, name, entry.value, name, entry.line, entry.text))
        elif not public.translate_flat(entry, out):
            out.unknown.append((name, entry.line, ""))
    if csv_layout:
        public.translate_csv(csv_entries, out)
    elif "accumulation_steps" in top:  # finetune/config.py (default batch_size 50)
        public.accumulate(top["accumulation_steps"], top.get("batch_size"), out, default=50)
    return own


def _parse(path: Path) -> tuple[yaml.Node | None, Any]:
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
    if data is not None and (not isinstance(node, yaml.MappingNode) or not isinstance(data, dict)):
        raise ConfigError(f"{path}: expected a mapping of key: value pairs at the top level")
    return node, data


def _entries(
    node: yaml.Node, data: Mapping[Any, Any], path: Path, prefix: str = ""
) -> dict[str, public.Entry]:
    """One mapping level as `Entry`s by dotted name; a key written twice is an error."""
    lines: dict[str, int] = {}
    texts: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key, line = str(key_node.value), key_node.start_mark.line + 1
        if key in lines:
            raise ConfigError(
                f"{path}:{line}: key '{prefix}{key}' appears twice (first on line {lines[key]})"
            )
        lines[key] = line
        texts[key] = _source_text(value_node)
    return {
        f"{prefix}{key}": public.Entry(f"{prefix}{key}", lines.get(str(key), 0), value,
                                       texts.get(str(key)))
        for key, value in data.items()
    }  # fmt: skip


def _child(node: yaml.Node, name: str) -> yaml.Node:
    return next(v for k, v in node.value if str(k.value) == name)


def _section(
    path: Path, node: yaml.Node, entry: public.Entry, keys: set[str], out: public.Translation
) -> list[tuple[str | None, str, Any, str, int, Any]]:
    """A `tokenizer:` / `predictor:` section: our keys for that stage only."""
    stage = entry.name
    if entry.value is None:
        return []
    child = _child(node, stage)
    if not isinstance(entry.value, Mapping) or not isinstance(child, yaml.MappingNode):
        raise ConfigError(
            f"{path}:{entry.line}: {stage}: expected a mapping of the keys that differ for the "
            f"{stage} stage (e.g. {stage}: {{lr: 0.0001}})"
        )
    settings = []
    for name, sub in _entries(child, entry.value, path, f"{stage}.").items():
        key = name.split(".", 1)[1]
        if key in keys and key != "train_type":
            settings.append((stage, key, sub.value, name, sub.line, sub.text))
        elif key == "train_type":
            out.unknown.append((name, sub.line, f"drop it: the {stage}: section is that stage"))
        else:
            out.unknown.append((name, sub.line, ""))
    return settings


def _hint(name: str, keys: set[str]) -> str:
    """What to write instead of an unknown key: the public tables' answer for a public name,
    else a close key of ours (strict, so a hint is a typo's fix, not another concept)."""
    section, _, leaf = name.rpartition(".")
    if section and section not in public.STAGE_NAMES and leaf in keys:
        return f"write '{leaf}' at the top level (or in a tokenizer:/predictor: section)"
    known = public.csv_hint(name) or public.flat_hint(leaf)
    if known:
        return known if known.startswith(("no ", "drop ")) else f"use {known}"
    known = public.leaf_hint(leaf, keys)
    if known:
        return known
    return did_you_mean(leaf, keys)


def _unknown_message(path: Path, unknown: list[tuple[str, int, str]], keys: set[str]) -> str:
    hints = [(name, line, given or _hint(name, keys)) for name, line, given in unknown]
    if len(hints) == 1:
        name, line, hint = hints[0]
        return (
            f"{path}:{line}: unknown key '{name}'"
            + (f"; {hint}" if hint else "")
            + (" (see params.md for the keys)")
        )
    parts = [
        f"'{name}' (line {line}" + (f"; {hint})" if hint else ")") for name, line, hint in hints
    ]
    return (
        f"{path}: {len(hints)} unknown keys: " + ", ".join(parts) + " (see params.md for the keys)"
    )


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


def config_layers(config_file: str | os.PathLike[str] | None) -> ConfigLayers:
    """The file's `ConfigLayers` (empty without a file), logging the public names it read as
    ours in one line."""
    if not config_file:
        return ConfigLayers()
    layers = read_config_layers(config_file)
    if layers.notes:
        log.info("config: public names read as ours: %s", "; ".join(layers.notes))
    return layers


def merged_values(
    config_file: str | os.PathLike[str] | ConfigLayers | None,
    overrides: Mapping[str, Any] | None = None,
    stage: str | None = None,
) -> dict[str, Any]:
    """Defaults < the file's shared values < its section of `stage` (default: the
    `train_type` of `overrides`, else of the file) < the explicit `overrides`, which apply to
    every stage (a command-line flag wins over the file, as in Lightning's and torchtune's
    CLIs; one stage's value is set in its section)."""
    if isinstance(config_file, ConfigLayers):
        layers = config_file
    else:
        layers = config_layers(config_file)
    overrides = dict(overrides or {})
    stage = stage or overrides.get("train_type") or layers.shared.get("train_type")
    return {**layers.values(stage), **overrides}


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
