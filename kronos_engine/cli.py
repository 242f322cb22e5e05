"""The command line: flags and a YAML file in, one validated `TrainConfig`, one training run out.

Precedence is explicit flags > `--config` YAML > `TrainConfig` defaults. Every mistake a user can
make before training starts (unknown key, wrong type, impossible combination, missing file,
unknown callback) ends the process with exactly one line `error: <message>` on stderr and exit
code 2, so a typo never costs a data build or a traceback to read.

`scripts/train.py` is `main`, `scripts/pipeline.py` is `pipeline_main`; both drive the same
`TrainContextBuilder` + `Trainer` as library users do, so there is one training loop.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import logging
import os
import signal
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kronos_engine.config import CHOICES, ConfigError, TrainConfig, coerce, field_type

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
PIPELINE_STAGES = ("tokenizer", "predictor")


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
    tp = field_type(key)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
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


# ---------------------------------------------------------------------------- YAML


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
    keys = {f.name for f in config_fields()}
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
    tp, is_list = _base_type(key)
    if is_list:
        (tp,) = typing.get_args(tp)
    return tp is str


# ---------------------------------------------------------------------------- config


def _merged_values(args: argparse.Namespace) -> dict[str, Any]:
    values = read_yaml_config(args.config) if getattr(args, "config", None) else {}
    values.update(flag_values(args))
    return values


def load_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """The validated config of a `scripts/train.py` command line (raises, never exits)."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(build_parser(), argv)
    values = _merged_values(args)
    if "train_type" not in values:
        raise ConfigError(
            "train_type: required; pass --train_type=tokenizer or --train_type=predictor "
            "(or set train_type in the --config file)"
        )
    return TrainConfig.from_dict(values)


def check_before_work(cfg: TrainConfig) -> None:
    """Cheap checks the builder would only reach after loading data: the resume path exists and
    `callbacks`/`strategy` import, so a typo fails in a second, not after the data build."""
    if cfg.resume and not Path(cfg.resume).exists():
        raise ConfigError(f"resume: '{cfg.resume}' does not exist")
    if cfg.data_source == "qlib":
        from kronos_engine.data.sources_qlib import require_pyqlib

        require_pyqlib()
    from kronos_engine.model_factory import check_pretrained_paths

    check_pretrained_paths(cfg)
    from kronos_engine import run_dir

    run_dir.check_output_dir(cfg)  # fails fast, before the folder is created for the lock
    from kronos_engine.callback import TrainCallback
    from kronos_engine.registry import CALLBACKS, STRATEGIES, RegistryError
    from kronos_engine.strategy import Strategy, check_strategy_train_type

    checks = [("callbacks", name, CALLBACKS, TrainCallback) for name in cfg.callbacks]
    if cfg.strategy:
        checks.append(("strategy", cfg.strategy, STRATEGIES, Strategy))
    for key, name, registry, base in checks:
        try:
            obj = registry.get(name)
        except RegistryError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise ConfigError(
                f"{key}: '{name}' is {obj!r}, not a subclass of {base.__module__}.{base.__name__}"
            )
        if key == "strategy":
            check_strategy_train_type(obj, name, cfg.train_type)
        if key == "callbacks":  # the builder creates command-line callbacks without arguments
            try:
                inspect.signature(obj).bind()
            except TypeError as exc:
                raise ConfigError(
                    f"callbacks: '{name}' cannot be created without arguments ({exc}); give it "
                    "defaults or pass an instance with TrainContextBuilder.with_callbacks"
                ) from None
    if is_rank0():
        run_dir.acquire(cfg.resolved_output_dir)  # held until the run ends (see run_dir)
        run_dir.check_output_dir(cfg)  # again: another run may have finished in between


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
    from kronos_engine.checkpoint import ResumeError
    from kronos_engine.data import DataError
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


def _close_distributed() -> None:
    """The end of a successful distributed run, in an order that cannot abort a rank.

    Rank 1 sometimes died at exit with `terminate called without an active exception`
    (SIGABRT): `destroy_process_group` only unregisters the gloo group, the C++ object lives on
    while the DDP model's reducer (kept alive by the run's context, and by reference cycles
    until a garbage collection) holds it, and it was then destroyed during interpreter exit,
    after the peer had already closed its sockets, with its worker threads still joinable.
    So: drop the model and collect (the group is freed while every peer is still connected),
    meet at a barrier, destroy the group, then exit."""
    import gc

    import torch.distributed as dist

    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    gc.collect()


def _shutdown_distributed() -> None:
    """After an error (no barrier: a peer may be gone); a no-op after `_close_distributed`."""
    import gc

    import torch.distributed as dist

    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run_training(cfg: TrainConfig):
    """Build and fit one run; returns the finished `TrainContext`."""
    from kronos_engine.builder import TrainContextBuilder
    from kronos_engine.trainer import Trainer

    ctx = TrainContextBuilder(cfg).build()
    if ctx.is_main:
        log.info(
            "%s: %d steps (%d per epoch), %d process(es) on %s, writing to %s",
            cfg.train_type,
            ctx.total_steps,
            ctx.steps_per_epoch,
            ctx.world_size,
            ctx.executor.device,
            ctx.output_dir,
        )
    Trainer(ctx).fit()
    return ctx


def stop_exit_code(ctx) -> int:
    """0 for a finished run; 128 + signal number when a signal stopped it (like a shell)."""
    if not ctx.preempted:
        return 0
    return 128 + int(ctx.stop_signal)


def describe_results(ctx, suggest_next: bool = True) -> str:
    """What the user reads at the end: where everything is and what to run next."""
    cfg, out = ctx.cfg, ctx.output_dir
    if ctx.preempted:
        status = f"stopped by {signal.Signals(ctx.stop_signal).name} at step {ctx.global_step}"
    else:
        reason = f", {ctx.stop_reason}" if ctx.stop_reason else ""
        status = f"finished at step {ctx.global_step} (epoch {ctx.epoch}{reason})"
    lines = [f"{cfg.train_type} training {status}", f"results in {out}/"]
    if (out / "best").is_dir():
        metric = ctx.strategy.metric_name
        lines.append(
            f"  best model   {out / 'best'}  ({metric} {ctx.best_metric:.6g} at step "
            f"{ctx.best_step})"
        )
    else:
        lines.append("  best model   none (no validation ran)")
    lines += [
        f"  metrics      {out / 'metrics.jsonl'}",
        f"  summary      {out / 'summary.json'}",
        f"  checkpoints  {out / 'checkpoints'}",
        f"  config       {out / 'config.yaml'}",
    ]
    if ctx.preempted:
        lines.append(
            f"resume with: python scripts/train.py --config {out / 'config.yaml'} --resume={out}"
        )
    elif suggest_next and cfg.train_type == "tokenizer" and (out / "best").is_dir():
        lines.append(f"next: {next_predictor_command(ctx)}")
    lines.append(f"plot: python scripts/plot.py {out}")
    return "\n".join(lines)


def next_predictor_command(ctx) -> str:
    """The predictor run that goes with a finished tokenizer run: the same config (data,
    windows, exp_dir) as written to its config.yaml, this tokenizer's best/, a predictor
    preset with its token bits, and none of the tokenizer-only settings."""
    from kronos_engine.models.presets import PREDICTOR_PRESETS

    cfg, out = ctx.cfg, ctx.output_dir
    model = getattr(ctx.model, "module", ctx.model)
    bits = (getattr(model, "s1_bits", None), getattr(model, "s2_bits", None))
    flags = [
        "--train_type=predictor",
        f"--config {out / 'config.yaml'}",
        f"--tokenizer_path={out / 'best'}",
        f"--output_dir={out.parent / 'predictor'}",
    ]
    if not cfg.pretrained_predictor:  # model_preset in config.yaml names the tokenizer's preset
        matching = [
            name
            for name, conf in PREDICTOR_PRESETS.items()
            if (conf.get("s1_bits"), conf.get("s2_bits")) == bits
        ]
        if matching:
            flags.append(f"--model_preset={'small' if 'small' in matching else matching[0]}")
    if cfg.strategy:
        flags.append("--strategy=null")
    if cfg.resume:
        flags.append("--resume=null")
    if cfg.overwrite:
        flags.append("--overwrite=false")
    return "python scripts/train.py " + " ".join(flags)


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
    setup_logging()
    try:
        cfg = load_config(argv)
        check_before_work(cfg)
        ctx = run_training(cfg)
        ctx.executor.barrier()  # every rank done with its collectives before teardown
        if ctx.is_main:
            print(describe_results(ctx), flush=True)
        code = stop_exit_code(ctx)
        del ctx  # the DDP model's reducer holds the process group: free it now (see below)
        _close_distributed()
        return code
    except (SystemExit, KeyboardInterrupt, Exception) as exc:
        return exit_code_for(exc)
    finally:
        _release_output_dirs()
        _shutdown_distributed()


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
    values = _merged_values(args)
    if values.pop("train_type", None) is not None:
        log.info("pipeline: ignoring train_type from the config; each stage sets its own")
    for key, why in (
        ("output_dir", "each stage writes to <exp_dir>/<stage>; set exp_dir instead"),
        ("resume", "resume a single stage with scripts/train.py --resume=<its output dir>"),
    ):
        if values.get(key) is not None:
            raise ConfigError(f"{key}: not supported by the pipeline; {why}")
    exp_dir = Path(values.get("exp_dir") or TrainConfig().exp_dir)
    if values.get("cache_dir") is None:
        values["cache_dir"] = str(exp_dir / "cache")
    stages: dict[str, TrainConfig] = {}
    if not args.skip_tokenizer:
        stages["tokenizer"] = TrainConfig.from_dict({**values, "train_type": "tokenizer"})
    if not args.skip_predictor:
        pred = {**values, "train_type": "predictor"}
        own = exp_dir / "tokenizer" / "best"
        # The tokenizer this experiment trains (or trained before) wins over the pretrained one.
        if not pred.get("tokenizer_path") and ("tokenizer" in stages or own.is_dir()):
            pred["tokenizer_path"] = str(own)
        stages["predictor"] = TrainConfig.from_dict(pred)
    data_cfg = next(iter(stages.values()), None) or TrainConfig.from_dict(values)
    return stages, data_cfg


def prepare_data(cfg: TrainConfig) -> None:
    """Build (or verify) the cached splits once so both stages only read them."""
    from kronos_engine.data import build_datasets

    splits = build_datasets(cfg)
    log.info("data prepared in %s (%s)", cfg.cache_dir, splits.summary.get("cache"))


def pipeline_main(argv: Sequence[str] | None = None) -> int:
    """`scripts/pipeline.py`: data -> tokenizer -> predictor, stopping at the first failure."""
    setup_logging()
    finished = []
    try:
        stages, data_cfg = load_pipeline_configs(argv)
        for cfg in stages.values():
            check_before_work(cfg)
        if "predictor" in stages and "tokenizer" not in stages:
            from kronos_engine.model_factory import preflight

            preflight(stages["predictor"])
        if is_rank0():  # other ranks wait in the first stage's data barrier
            prepare_data(data_cfg)
        for name, cfg in stages.items():
            if is_rank0():
                log.info("pipeline: %s stage", name)
            ctx = run_training(cfg)
            ctx.executor.barrier()  # every rank done with this stage before the next/teardown
            finished.append(ctx)
            if ctx.preempted:
                break
        if is_rank0():
            if not finished:
                print(f"data prepared in {data_cfg.cache_dir}; no stage to train", flush=True)
            for ctx in finished:
                print(describe_results(ctx, suggest_next=False), flush=True)
        code = stop_exit_code(finished[-1]) if finished else 0
        ctx = None  # noqa: F841 - drop the last stage's model before the teardown
        finished.clear()
        _close_distributed()
        return code
    except (SystemExit, KeyboardInterrupt, Exception) as exc:
        return exit_code_for(exc)
    finally:
        _release_output_dirs()
        _shutdown_distributed()
