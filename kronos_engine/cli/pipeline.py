"""`scripts/pipeline.py`: data preparation -> tokenizer -> predictor for one experiment, with the
train command's flags (less `train_type`, set per stage), `--skip-tokenizer`/`--skip-predictor`
(`--skip-basemodel`, the public name) and `--skip-existing` (a stage whose `best/` exists).
A flag applies to both stages; one stage's values go in the YAML's `tokenizer:`/`predictor:`.
With `data_source: sina` or `ccxt` the data step first fetches newer bars into `data_path`
(`data.markets`), unless `--skip-data-process` says to train on the folder as it is.
The stage loop itself is `training.pipeline`; this module only parses, reports and closes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from kronos_engine import distenv
from kronos_engine.cli.flags import build_parser, flag_values, parse
from kronos_engine.cli.launch import launch, pop_nprocs
from kronos_engine.cli.shell import (
    close_executor,
    exit_code_for,
    release_output_dirs,
    setup_logging,
)
from kronos_engine.config import TrainConfig
from kronos_engine.config.loading import config_layers
from kronos_engine.data.markets import MARKET_SOURCES, check_market, fetch_market
from kronos_engine.training.executors import make_executor
from kronos_engine.training.outcome import describe_results, stop_exit_code
from kronos_engine.training.pipeline import check_stages, prepare_data, run_stages, stage_configs

log = logging.getLogger("kronos_engine")


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
    stages.add_argument(
        "--skip-basemodel",
        action="store_true",
        default=False,
        help="the public train_sequential.py name of --skip-predictor",
    )
    stages.add_argument(
        "--skip-existing",
        action="store_true",
        default=False,
        help="skip a stage whose <exp_dir>/<stage>/best exists (as train_sequential.py does)",
    )
    stages.add_argument(
        "--skip-data-process",
        action="store_true",
        default=False,
        help="data_source sina/ccxt: train on the bars already in data_path instead of "
        "fetching newer ones first",
    )
    return parser


def fetches_first(argv: Sequence[str], data_cfg: TrainConfig) -> bool:
    """A sina/ccxt pipeline without `--skip-data-process` fetches into data_path first
    (checked here, before any output dir is held or any request is sent)."""
    if data_cfg.data_source not in MARKET_SOURCES:
        return False
    if parse(build_pipeline_parser(), argv).skip_data_process:
        return False
    check_market(data_cfg)
    return True


def load_pipeline_configs(
    argv: Sequence[str] | None = None,
) -> tuple[dict[str, TrainConfig], TrainConfig]:
    """The validated config of every stage to run, and one for data preparation. The skip
    options come from the flags or from a public `finetune_csv` file's `experiment:`."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse(build_pipeline_parser(), argv)
    layers = config_layers(getattr(args, "config", None))
    if args.skip_basemodel:
        log.info("pipeline: --skip-basemodel (train_sequential.py) is --skip-predictor here")
    options = layers.pipeline
    return stage_configs(
        layers,
        flag_values(args),
        skip_tokenizer=args.skip_tokenizer or options.get("skip_tokenizer", False),
        skip_predictor=args.skip_predictor
        or args.skip_basemodel
        or options.get("skip_predictor", False),
        skip_existing=args.skip_existing or options.get("skip_existing", False),
    )


def pipeline_main(argv: Sequence[str] | None = None) -> int:
    """`scripts/pipeline.py`: data -> tokenizer -> predictor, stopping at the first failure.
    The stages share one executor (one process group), closed at the end."""
    setup_logging()
    executor = None
    try:
        nprocs, argv = pop_nprocs(sys.argv[1:] if argv is None else argv)
        stages, data_cfg = load_pipeline_configs(argv)
        fetch = fetches_first(argv, data_cfg)
        if nprocs is not None and nprocs > 1:
            check_stages(stages, hold=False)  # config errors here, before any process starts
            if fetch:  # once, here: the workers train on the folder as fetched
                fetch_market(data_cfg)
                argv = [*argv, "--skip-data-process"]
            return launch("pipeline", argv, nprocs)
        check_stages(stages)  # every stage checked and its output dir held before the data
        if distenv.is_rank0():  # other ranks wait in the first stage's data barrier
            if fetch:
                fetch_market(data_cfg)
            prepare_data(data_cfg)
        if stages:
            executor = make_executor(data_cfg.device, data_cfg.precision)
        finished = run_stages(stages, executor)
        if distenv.is_rank0():
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
        release_output_dirs()
        close_executor(executor)
