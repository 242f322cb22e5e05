"""`scripts/evaluate.py`: did fine-tuning help? Rolling-origin forecasts of a held-out split by
the run's model, the naive and drift baselines and any `--compare` models, scored on the same
origins, written to `<exp_dir>/eval/`.

Data are read exactly as the run read them (its config: source, symbols, splits, bad-row
policy, cache), and lookback / `pred_len` default to the run's windows, so `--exp_dir` alone
works. `--nprocs N` shares the batches of origins out over N processes (`cli.processes`); rank
0 writes the one process's files.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kronos_engine.cli.forecast_flags import add_sampling_arguments, check_lookback, forecast_flags
from kronos_engine.cli.helpformat import DefaultsHelpFormatter
from kronos_engine.cli.processes import finish, join, launch_if_asked, leave
from kronos_engine.cli.shell import exit_code_for, setup_logging
from kronos_engine.data import as_data_spec, build_datasets
from kronos_engine.data.handoff import handoff_env
from kronos_engine.data.spec import DataSpec
from kronos_engine.errors import EvaluationError
from kronos_engine.evaluation.baselines import BASELINES
from kronos_engine.evaluation.origins import plan_origins, subset_by_date
from kronos_engine.evaluation.report import (
    COMMAND,
    EVALUATION_FILES,
    markdown_table,
    write_evaluation,
)
from kronos_engine.evaluation.rolling import ForecastOptions, run_rolling
from kronos_engine.evaluation.scaling import parse_scaling, run_scaling
from kronos_engine.forecasting import KronosPredictor, find_predictor_run
from kronos_engine.forecasting.options import check_pred_len
from kronos_engine.layout import RunLayout, stage_run
from kronos_engine.run.outputs_guard import check_output_dir

log = logging.getLogger("kronos_engine")

SPLITS = ("test", "val")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/evaluate.py",
        description="Score a trained predictor against baselines on a held-out split.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--exp_dir", required=True, help="experiment dir or predictor run dir")
    p.add_argument("--split", choices=SPLITS, default="test", help="split to evaluate on")
    p.add_argument("--lookback", type=int, help="history rows per forecast (default: the run's)")
    p.add_argument("--pred_len", type=int, help="rows forecast per origin (default: the run's)")
    p.add_argument("--stride", type=int, default=1, help="rows between origins of a symbol")
    p.add_argument(
        "--max_origins",
        type=int,
        help="evaluate at most this many origins, on evenly spaced dates (default: all)",
    )
    p.add_argument("--name", default="kronos", help="name of the run's model in the table")
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="another model: a predictor folder (read with the run's tokenizer) or an "
        "experiment/predictor run dir (with its own tokenizer); repeatable",
    )
    p.add_argument(
        "--baselines",
        default="naive,drift",
        help="comma-separated baselines: naive, drift (naive is always included)",
    )
    p.add_argument("--no_model", action="store_true", help="only the baselines and --compare")
    add_sampling_arguments(p, batch_size=64, batch_help="origins forecast together")
    p.add_argument(
        "--bootstrap_seed",
        type=int,
        default=0,
        help="seed of the block bootstrap behind the significance intervals (recorded in "
        "metrics.json)",
    )
    p.add_argument(
        "--volatility",
        action="store_true",
        help="also score each model's realised-volatility forecast over the horizon (from its "
        "sample paths: needs --sample_count >= 2) and the historical one: volatility.json",
    )
    p.add_argument(
        "--scaling",
        metavar="N,N,...",
        help="test-time scaling: IC, RankIC and CRPS of each sampled model at these sample "
        "counts (e.g. 1,5,10,20): scaling.json, scaling.png",
    )
    p.add_argument("--scaling_seeds", type=int, help="seeds per --scaling count (default: 3)")
    p.add_argument("--output", help="output folder (default <exp_dir>/eval)")
    p.add_argument("--no_plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


@dataclass
class Plan:
    """Everything an evaluation needs, resolved from the arguments and the run."""

    store: Any
    forecasters: dict[str, Any]
    opts: Any
    output: Path
    info: dict[str, Any]
    scaling: Any = None  # `evaluation.scaling.ScalingPlan` of --scaling


def main(argv: Sequence[str] | None = None) -> int:

    setup_logging()
    try:
        code, args = launch_if_asked(
            "evaluate", argv, build_parser().parse_args, planned, _hand_over_data
        )
        if args is None:  # --nprocs: the workers evaluated
            return code
        run(args)
        return 0
    except (SystemExit, KeyboardInterrupt, Exception) as exc:
        return exit_code_for(exc)
    finally:
        leave()


def _hand_over_data(checked: tuple[Plan, Any]) -> dict[str, str]:
    """`--nprocs` workers map the split the parent's checks read (the data is built once)."""
    return handoff_env(checked[0].store)


def planned(args: argparse.Namespace) -> tuple[Plan, Any]:
    """Every check, the split read and its origins: what is evaluated (nothing is run)."""
    plan = resolve(args)
    origins = plan_origins(plan.store, plan.opts.lookback, plan.opts.pred_len, args.stride)
    if not len(origins):
        raise EvaluationError(
            f"--split {args.split}: no origin with {plan.opts.lookback} lookback rows and "
            f"{plan.opts.pred_len} rows after it; lower --lookback/--pred_len or widen the split"
        )
    if args.max_origins is not None:
        origins = subset_by_date(plan.store, origins, args.max_origins)
    return plan, origins


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Evaluate; under `--nprocs`/torchrun each rank forecasts its share of the batches and
    rank 0 alone writes (the other ranks return `{}`)."""
    plan, origins = planned(args)
    log_size(plan, len(origins))
    info = {**plan.info, "origins": len(origins), "models": ", ".join(plan.forecasters)}
    shard = join()
    if shard is not None and not shard.is_main:
        run_rolling(plan.store, origins, plan.forecasters, plan.opts, progress=False, shard=shard)
        if plan.scaling is not None:  # the same runs as rank 0's, in the same order
            run_scaling(
                plan.store, origins, plan.forecasters, plan.opts, plan.scaling, False, shard
            )
        finish(shard)
        return {}
    overall = write_evaluation(
        plan.store,
        origins,
        plan.forecasters,
        plan.opts,
        plan.output,
        info,
        plots=not args.no_plots,
        progress=not args.no_progress,
        bootstrap_seed=args.bootstrap_seed,
        scaling=plan.scaling,
        shard=shard,
    )

    print(markdown_table(overall))
    print(f"evaluated {len(origins)} origins x {len(plan.forecasters)} models -> {plan.output}")
    finish(shard)
    return overall


def log_size(plan: Plan, origins: int) -> None:
    """Before the forecasts: how many the sampled models make (the baselines cost ~nothing)."""
    models = sum(isinstance(f, KronosPredictor) for f in plan.forecasters.values())
    samples = plan.opts.sampling.sample_count
    log.info(
        "forecasting %d origins (%d symbols) x %d sample path(s) x %d model(s) = %d forecasts "
        "of %d bars, plus the baselines (fewer: --stride, --max_origins)",
        origins, plan.info["symbols"], samples, models, origins * samples * models,
        plan.opts.pred_len,
    )  # fmt: skip


def _check_positive(value: Any, flag: str) -> int:
    if value is None or isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EvaluationError(f"{flag}: must be a positive integer, got {value!r}")
    return value


def resolve(args: argparse.Namespace) -> Plan:
    """Arguments + the run's config -> data store, forecasters, options, output folder."""

    flags = forecast_flags(args)
    run_info = find_predictor_run(args.exp_dir)
    flags = flags.for_run(run_info.config)
    lookback = _check_positive(
        args.lookback if args.lookback is not None else run_info.lookback_window,
        "--lookback",
    )
    if lookback < 2:
        raise EvaluationError("--lookback: must be >= 2 (MASE needs one step change)")
    pred_len = check_pred_len(
        _check_positive(
            args.pred_len if args.pred_len is not None else run_info.predict_window,
            "--pred_len",
        ),
        "--pred_len",
    )
    _check_positive(args.stride, "--stride")
    if args.max_origins is not None:
        _check_positive(args.max_origins, "--max_origins")
    if args.bootstrap_seed < 0:
        raise EvaluationError(f"--bootstrap_seed: must be >= 0, got {args.bootstrap_seed}")
    baselines = _baselines(args.baselines)
    compared = [_named(item) for item in args.compare]
    _check_names(args, baselines, [name for name, _ in compared])
    scaling = _check_tasks(args, flags.sampling.sample_count, not args.no_model or bool(compared))
    if not args.no_model or compared:  # a Kronos model sees at most max_context bars
        source = " (the run's lookback_window)" if args.lookback is None else ""
        check_lookback(lookback, flags, source)
    output = _checked_output(args, run_info)
    forecasters: dict[str, Any] = {}
    if not args.no_model:
        forecasters[args.name] = KronosPredictor.from_pretrained(
            run_info.tokenizer_dir, run_info.predictor_dir, clip=run_info.clip, **flags.model
        )
    for name, path in compared:
        forecasters[name] = _compare_model(Path(path), run_info, flags.model)
    for name in ["naive", *baselines]:
        if name not in forecasters:
            forecasters[name] = BASELINES[name]()
    store = load_split(DataSpec.from_mapping(run_info.config), args.split, lookback, pred_len)
    sampling = flags.sampling
    opts = ForecastOptions(pred_len, lookback, sampling, flags.batch_size, args.volatility)
    info = {
        "run": str(run_info.run_dir),
        "split": args.split,
        "lookback": lookback,
        "pred_len": pred_len,
        "stride": args.stride,
        "sample_count": sampling.sample_count,
        "sampling": f"T={sampling.T}, top_k={sampling.top_k}, top_p={sampling.top_p}, "
        f"seed={sampling.seed}",
        "symbols": len(store.symbols),
    }
    return Plan(store, forecasters, opts, output, info, scaling)


def _baselines(text: str) -> list[str]:
    """`--baselines` as names, each known and listed once (naive is added when missing)."""
    baselines = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise EvaluationError(f"--baselines: unknown {unknown}; choose from {sorted(BASELINES)}")
    twice = sorted({b for b in baselines if baselines.count(b) > 1})
    if twice:
        raise EvaluationError(f"--baselines: {twice} listed more than once; give each once")
    return baselines


def _check_names(args: argparse.Namespace, baselines: list[str], compared: list[str]) -> None:
    """Every row of the table is one forecaster: the model (`--name`), each `--compare` and
    each baseline need their own name, or one would be reported under another's."""
    taken = {b: f"the {b} baseline" for b in {"naive", *baselines, *BASELINES}}
    if not args.no_model:
        if not args.name.strip():
            raise EvaluationError("--name: must not be empty")
        if args.name in taken:
            raise EvaluationError(
                f"--name: '{args.name}' is the name of {taken[args.name]}; give the model "
                f"another name (taken: {', '.join(sorted(taken))})"
            )
        taken[args.name] = "the run's model (--name)"
    for name in compared:
        if name in taken:
            raise EvaluationError(
                f"--compare: name '{name}' is already {taken[name]}; give NAME=PATH with "
                "another name"
            )
        taken[name] = "another --compare model"


def _checked_output(args: argparse.Namespace, run_info: Any) -> Path:
    """`--output` (default `<exp_dir>/eval`), refused before any work when it is a run or
    experiment folder, the data or a model read, or a folder evaluate did not write."""

    output = Path(args.output) if args.output else Path(args.exp_dir) / "eval"
    models = [run_info.tokenizer_dir, run_info.predictor_dir]
    models += [Path(p) for _, p in map(_named, args.compare) if (Path(p) / "config.json").is_file()]
    data = (
        run_info.config.get("data_path") if run_info.config.get("data_source") != "demo" else None
    )
    check_output_dir(
        output,
        flag="--output",
        command=COMMAND,
        error=EvaluationError,
        inputs=[data, *models],
        own_names=EVALUATION_FILES,
    )
    return output


def _named(item: str) -> tuple[str, str]:
    name, sep, path = item.partition("=")
    if not sep:
        path = item
        name = Path(item.rstrip("/")).name or item
    if not name or not path:
        raise EvaluationError(f"--compare: '{item}' is not [NAME=]PATH")
    return name, path


def _compare_model(path: Path, run_info: Any, kwargs: dict) -> Any:
    """A run or experiment dir brings its own tokenizer; a bare predictor folder is read with
    the evaluated run's tokenizer (the one it must share token bits with)."""

    if RunLayout(path).best.is_dir() or stage_run(path, "predictor").best.is_dir():
        return KronosPredictor.from_run(path, **kwargs)
    if not (path / "config.json").is_file():
        raise EvaluationError(
            f"--compare: '{path}' is neither a predictor folder (config.json + "
            "model.safetensors) nor a run dir with best/"
        )
    return KronosPredictor.from_pretrained(
        run_info.tokenizer_dir, path, clip=run_info.clip, **kwargs
    )


def load_split(data: Any, split: str, lookback: int, pred_len: int) -> Any:
    """The split's store (its rows plus `lookback` rows before), read as the run read it:
    `data` is the run's `DataSpec` (or its config mapping), cut into `lookback` + `pred_len`
    windows."""

    spec = as_data_spec(data).replace(lookback_window=lookback, predict_window=pred_len)
    splits = build_datasets(spec)
    dataset = splits.test if split == "test" else splits.val
    if dataset is None:
        raise EvaluationError(
            f"--split {split}: the run has no {split} split (set test_time_range or a test "
            "share in split_ratios, or use --split val)"
        )
    return dataset.store


def _check_tasks(args: argparse.Namespace, sample_count: int, sampled: bool) -> Any:
    """`--volatility` and `--scaling` (the plan, or None), refused before any work where
    they cannot be defined: scaling a sampled model, a model's volatility two paths."""
    plan = parse_scaling(args.scaling, args.scaling_seeds)
    if plan is not None and not sampled:
        raise EvaluationError(
            "--scaling: needs a sampled model (the run's, without --no_model, or a --compare); "
            "the baselines are deterministic"
        )
    if args.volatility and sampled and sample_count < 2:
        raise EvaluationError(
            f"--volatility: needs --sample_count >= 2, got {sample_count}: a model's "
            "volatility forecast is the mean realised variance over its sample paths, and one "
            "path is one draw, not a forecast of it"
        )
    return plan
