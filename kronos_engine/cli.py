"""The command line: argv in, the library called, errors mapped to one line and an exit code.

Flags are generated from the `TrainConfig` fields; precedence (flags > `--config` YAML >
defaults) and every check live in `kronos_engine.config`. Every mistake a user can make before
training starts (unknown key, wrong type, impossible combination, missing file, unknown
callback) ends the process with exactly one line `error: <message>` on stderr and exit code 2,
so a typo never costs a data build or a traceback to read.

`scripts/train.py` is `main`, `scripts/pipeline.py` is `pipeline_main`; both drive the same
`TrainContextBuilder` + `Trainer` (through `kronos_engine.pipeline`) as library users do, so
there is one training loop and one set of checks.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import signal
import sys
import typing
from collections.abc import Sequence
from typing import Any

from kronos_engine.config import (
    CHOICES,
    ConfigError,
    TrainConfig,
    coerce,
    field_type,
    merged_values,
    unwrap_optional,
)
from kronos_engine.launch import HELP as NPROCS_HELP
from kronos_engine.launch import launch, pop_nprocs
from kronos_engine.outcome import describe_results, stop_exit_code
from kronos_engine.pipeline import (
    check_stages,
    prepare_data,
    run_stages,
    run_training,
    stage_configs,
)

log = logging.getLogger("kronos_engine")

GROUP_TITLES = {
    "run": "run",
    "data": "data",
    "model": "model",
    "optim": "optimisation",
    "system": "system",
    "logging": "logging and checkpoints",
    "toolbox": "fine-tuning toolbox",
}
EXIT_USAGE = 2  # bad config / input: nothing was trained
EXIT_FAILED = 1  # training failed (non-finite loss, empty validation, an unwritable output dir)


class UsageError(Exception):
    """A command-line mistake argparse found (bad flag syntax, unknown flag)."""


class _Parser(argparse.ArgumentParser):
    """Raises instead of printing usage + exiting, so `main` reports one line and returns 2."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


# ---------------------------------------------------------------------------- flags


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
        help="YAML file of key: value pairs (same keys as the flags)",
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


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
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


# ---------------------------------------------------------------------------- config


def _merged_values(args: argparse.Namespace) -> dict[str, Any]:
    return merged_values(getattr(args, "config", None), flag_values(args))


def load_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """The validated config of a `scripts/train.py` command line (raises, never exits); the
    file and registry checks run in `TrainContextBuilder.build` (`kronos_engine.config.check`)."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(build_parser(), argv)
    values = _merged_values(args)
    if "train_type" not in values:
        raise ConfigError(
            "train_type: required; pass --train_type=tokenizer or --train_type=predictor "
            "(or set train_type in the --config file)"
        )
    return TrainConfig.from_dict(values)


# ---------------------------------------------------------------------------- running


def is_rank0() -> bool:
    """Rank from the torchrun environment, usable before any process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO if is_rank0() else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "fix your config or input", reported as one line with exit code 2."""
    from kronos_engine.backtest import BacktestError
    from kronos_engine.data import DataError
    from kronos_engine.errors import ResumeError
    from kronos_engine.evaluation.cli import EvaluationError
    from kronos_engine.forecasting import ForecastError
    from kronos_engine.models import CheckpointError
    from kronos_engine.registry import RegistryError

    return (
        ConfigError, RegistryError, DataError, CheckpointError, ResumeError, UsageError,
        ForecastError, EvaluationError, BacktestError,
    )  # fmt: skip


def _training_errors() -> tuple[type[BaseException], ...]:
    """Errors a run can end with after it started; also one line, exit code 1."""
    from kronos_engine.errors import TrainingError

    return (TrainingError,)


def _report_error(exc: BaseException, same_on_every_rank: bool = False) -> None:
    """One line from rank 0. Once the process group exists another rank reports too (prefixed
    with its rank): its error may be its own (its data, disk or files), and rank 0 would then
    only see a closed connection. Errors from all-reduced values (`same_on_every_rank`) and
    config errors (before the process group) come from rank 0 alone."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if is_rank0():
        print(f"error: {message}", file=sys.stderr, flush=True)
    elif not same_on_every_rank and _distributed_started():
        print(f"error: rank {os.environ.get('RANK')}: {message}", file=sys.stderr, flush=True)


def _distributed_started() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _release_output_dirs() -> None:
    from kronos_engine import run_dir

    run_dir.release_all()


def _close_executor(executor) -> None:
    """After an error (no barrier: a peer may be gone); a no-op after a graceful close."""
    if executor is not None:
        executor.close(graceful=False)


def exit_code_for(exc: BaseException) -> int:
    """Report a known failure as one line and map it to the exit code; re-raise the rest."""
    if isinstance(exc, SystemExit):  # --help
        return int(exc.code or 0)
    if isinstance(exc, KeyboardInterrupt):
        _report_error(KeyboardInterrupt("interrupted"), same_on_every_rank=True)
        return 128 + signal.SIGINT
    if isinstance(exc, _user_errors()):
        _report_error(exc)
        return EXIT_USAGE
    if isinstance(exc, _training_errors()):
        _report_error(exc, same_on_every_rank=True)
        return EXIT_FAILED
    if isinstance(exc, OSError):  # disk full, read-only or missing output dir: names the path
        _report_error(exc)
        return EXIT_FAILED
    raise exc


def main(argv: Sequence[str] | None = None) -> int:
    """`scripts/train.py`: parse, check, train, report. Returns the process exit code."""
    from kronos_engine.builder import TrainContextBuilder
    from kronos_engine.config import check

    setup_logging()
    builder = None
    try:
        nprocs, argv = pop_nprocs(sys.argv[1:] if argv is None else argv)
        cfg = load_config(argv)
        if nprocs is not None and nprocs > 1:
            check(cfg)  # a config error is one line here, before any process starts
            return launch("train", argv, nprocs)
        builder = TrainContextBuilder(cfg)  # its executor owns the process group (if any)
        ctx = run_training(builder)  # checks (config.check) and holds the output dir first
        ctx.executor.barrier()  # every rank done with its collectives before teardown
        if ctx.is_main:
            print(describe_results(ctx), flush=True)
        code = stop_exit_code(ctx)
        del ctx  # the DDP model's reducer holds the process group: free it first
        builder.executor.close(graceful=True)
        return code
    except (SystemExit, KeyboardInterrupt, Exception) as exc:
        return exit_code_for(exc)
    finally:
        _release_output_dirs()
        _close_executor(builder and builder.executor)


# ---------------------------------------------------------------------------- pipeline


def build_pipeline_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = build_parser(prog, with_train_type=False)
    parser.description = (
        "Data preparation -> tokenizer -> predictor for one experiment (<exp_dir>/tokenizer, "
        "<exp_dir>/predictor, processed data cached in <exp_dir>/cache). Flags override the "
        "--config YAML, which overrides the defaults; train_type is set per stage."
    )
    stages = parser.add_argument_group("pipeline options")
    stages.add_argument(
        "--skip-tokenizer",
        action="store_true",
        default=False,
        help="use an existing tokenizer (tokenizer_path, <exp_dir>/tokenizer/best or "
        "pretrained_tokenizer) instead of training one",
    )
    stages.add_argument(
        "--skip-predictor", action="store_true", default=False, help="stop after the tokenizer"
    )
    return parser


def load_pipeline_configs(
    argv: Sequence[str] | None = None,
) -> tuple[dict[str, TrainConfig], TrainConfig]:
    """The validated config of every stage to run, and one for data preparation."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(build_pipeline_parser(), argv)
    return stage_configs(
        _merged_values(args),
        skip_tokenizer=args.skip_tokenizer,
        skip_predictor=args.skip_predictor,
    )


def pipeline_main(argv: Sequence[str] | None = None) -> int:
    """`scripts/pipeline.py`: data -> tokenizer -> predictor, stopping at the first failure.
    The stages share one executor (one process group), closed at the end."""
    from kronos_engine.executors import make_executor

    setup_logging()
    executor = None
    try:
        nprocs, argv = pop_nprocs(sys.argv[1:] if argv is None else argv)
        stages, data_cfg = load_pipeline_configs(argv)
        if nprocs is not None and nprocs > 1:
            check_stages(stages, hold=False)  # config errors here, before any process starts
            return launch("pipeline", argv, nprocs)
        check_stages(stages)  # every stage checked and its output dir held before the data
        if is_rank0():  # other ranks wait in the first stage's data barrier
            prepare_data(data_cfg)
        if stages:
            executor = make_executor(data_cfg.device, data_cfg.precision)
        finished = run_stages(stages, executor)
        if is_rank0():
            if not finished:
                print(f"data prepared in {data_cfg.cache_dir}; no stage to train", flush=True)
            for text in [describe_results(ctx, suggest_next=False) for ctx in finished]:
                print(text, flush=True)  # (no loop variable keeps a stage's model alive)
        code = stop_exit_code(finished[-1]) if finished else 0
        finished.clear()  # drop the stages' models before the teardown
        if executor is not None:
            executor.close(graceful=True)
        return code
    except (SystemExit, KeyboardInterrupt, Exception) as exc:
        return exit_code_for(exc)
    finally:
        _release_output_dirs()
        _close_executor(executor)
