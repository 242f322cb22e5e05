"""Command-line flags from the config schema: one `--key` per `TrainConfig` field, grouped as in
`params.md`, converted by the schema's own `coerce`, with a "did you mean" for unknown flags.

Every parser raises `UsageError` instead of printing usage and exiting, so the shell reports one
line and returns 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import typing
from collections.abc import Sequence
from typing import Any

from kronos_engine.cli.launch import HELP as NPROCS_HELP
from kronos_engine.config import (
    CHOICES,
    DEVICES,
    TrainConfig,
    coerce,
    field_type,
    merged_values,
    unwrap_optional,
)
from kronos_engine.errors import UsageError

GROUP_TITLES = {
    "run": "run",
    "data": "data",
    "model": "model",
    "optim": "optimisation",
    "system": "system",
    "logging": "logging and checkpoints",
    "toolbox": "fine-tuning toolbox",
}


class _Parser(argparse.ArgumentParser):
    """Raises instead of printing usage + exiting, so `main` reports one line and returns 2."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))


def format_value(value: Any) -> str:
    """A value as it reads in YAML, for `--help` and `params.md` (`null`, `true`, `[a, b]`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return f.default


def _base_type(key: str) -> tuple[Any, bool]:
    """The field's type without `| None`, and whether it is a list."""
    tp, _ = unwrap_optional(field_type(key))
    return tp, typing.get_origin(tp) is list


def _metavar(key: str) -> str:
    if key in CHOICES:
        return "{" + ",".join(CHOICES[key]) + "}"
    if key == "device":
        return "{" + ",".join(DEVICES) + "}"
    tp, is_list = _base_type(key)
    if is_list:
        (item,) = typing.get_args(tp)
        return "A,B" if item is str else "X,Y"
    return {int: "N", float: "X", bool: "BOOL"}.get(tp, "STR")


def _help_text(f: dataclasses.Field, required: bool = False) -> str:
    text = f.metadata.get("help", "")
    if required:
        text += " (required, here or in --config)"
    elif "default" not in text:
        text += f" (default: {format_value(field_default(f))})"
    return text.replace("%", "%%")


def build_parser(
    prog: str | None = None, *, with_train_type: bool = True
) -> argparse.ArgumentParser:
    """One flag per `TrainConfig` key, grouped as in `params.md`; all defaults are SUPPRESS so
    the parsed namespace holds only what the user typed (and can override the YAML)."""
    parser = _Parser(
        prog=prog,
        description=(
            "Train the Kronos tokenizer or predictor. Flags override the --config YAML, which "
            "overrides the defaults; every flag is a key of params.md."
        ),
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="FILE.yaml",
        help="YAML file of key: value pairs (same keys as the flags; tokenizer: and predictor: "
        "sections for one stage's values; or the public finetune_csv YAML as it is)",
    )
    parser.add_argument("--nprocs", metavar="N", help=NPROCS_HELP)  # taken out by pop_nprocs
    groups = {
        name: parser.add_argument_group(f"{title} options") for name, title in GROUP_TITLES.items()
    }
    for f in config_fields():
        if f.name == "train_type" and not with_train_type:
            continue
        group = groups[f.metadata.get("group", "run")]
        flag = f"--{f.name}"
        tp, is_list = _base_type(f.name)
        help_text = _help_text(f, required=f.name == "train_type")
        if f.name == "callbacks":
            group.add_argument(flag, action="append", metavar="NAME", help=help_text)
        elif is_list:
            group.add_argument(flag, nargs="+", metavar=_metavar(f.name), help=help_text)
        elif tp is bool:
            group.add_argument(flag, nargs="?", const="true", metavar="true|false", help=help_text)
        else:
            group.add_argument(flag, metavar=_metavar(f.name), help=help_text)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    args, extras = parser.parse_known_args(list(argv))
    if extras:
        raise UsageError(_unknown_argument_message(parser, extras[0]))
    return args


def _unknown_argument_message(parser: argparse.ArgumentParser, arg: str) -> str:
    if not arg.startswith("-"):
        return f"unexpected argument '{arg}'; values go after their flag (--key=value)"
    name = arg.split("=", 1)[0]
    known = [s for action in parser._actions for s in action.option_strings]
    hint = difflib.get_close_matches("--" + name.lstrip("-").replace("-", "_"), known, n=1)
    close = f"; did you mean {hint[0]}?" if hint else ""
    return f"unknown flag '{name}'{close} (see --help or params.md for the keys)"


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The explicitly given config flags, converted to their field types."""
    keys = {f.name for f in config_fields()}
    values: dict[str, Any] = {}
    for key, raw in vars(args).items():
        if key not in keys:
            continue
        _, is_list = _base_type(key)
        if is_list:
            # `--k a b`, `--k=a,b` and repeated `--callbacks` all mean one comma list.
            raw = ",".join(str(v) for v in raw)
        values[key] = coerce(key, raw, field_type(key))
    return values


def merged_flag_values(args: argparse.Namespace) -> dict[str, Any]:
    return merged_values(getattr(args, "config", None), flag_values(args))
