"""`scripts/train.py`: argv -> one validated `TrainConfig` -> `TrainContextBuilder` + `Trainer`.

Flags are generated from the `TrainConfig` fields (`cli.flags`); precedence (flags > the
`--config` YAML's section of the `train_type` (`tokenizer:`/`predictor:`) > its other keys >
defaults) lives in `kronos_engine.config`, every check in `training.preflight`. Every
mistake a user can make before training starts (unknown key, wrong type, impossible combination,
missing file, unknown callback) ends the process with exactly one line `error: <message>` on
stderr and exit code 2 (`cli.shell`), so a typo never costs a data build or a traceback to read.
Library users drive the same builder and trainer: there is one training loop and one set of
checks.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from kronos_engine.callback import TrainCallback
from kronos_engine.cli.flags import build_parser, flag_values, parse
from kronos_engine.cli.launch import launch, pop_nprocs
from kronos_engine.cli.shell import (
    close_executor,
    exit_code_for,
    release_output_dirs,
    setup_logging,
)
from kronos_engine.config import TrainConfig, merged_values
from kronos_engine.config.loading import ConfigLayers, config_layers
from kronos_engine.errors import ConfigError
from kronos_engine.training.builder import TrainContextBuilder
from kronos_engine.training.outcome import describe_results, stop_exit_code
from kronos_engine.training.pipeline import run_training
from kronos_engine.training.preflight import check

log = logging.getLogger("kronos_engine")


def load_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """The validated config of a `scripts/train.py` command line (raises, never exits); the
    file and registry checks run in `TrainContextBuilder.build` (`kronos_engine.config.check`)."""
    return TrainConfig.from_dict(load_values(argv)[1])


def load_values(argv: Sequence[str] | None = None) -> tuple[ConfigLayers, dict[str, Any]]:
    """The config file's layers and the merged values of a command line (flags > the file's
    section of the `train_type` > its other keys), before `TrainConfig` checks them; the sweep
    builds each trial's values on them."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse(build_parser(), argv)
    layers = config_layers(getattr(args, "config", None))
    if layers.pipeline:  # a public finetune_csv file's experiment: switches
        log.info(
            "config: %s only steer scripts/pipeline.py; this run trains its train_type",
            ", ".join(sorted(layers.pipeline)),
        )
    if layers.sweep is not None:
        log.info("config: the sweep: section only steers scripts/sweep.py")
    values = merged_values(layers, flag_values(args))  # the train_type's section applies
    if "train_type" not in values:
        raise ConfigError(
            "train_type: required; pass --train_type=tokenizer or --train_type=predictor "
            "(or set train_type in the --config file)"
        )
    return layers, values


def main(
    argv: Sequence[str] | None = None,
    callbacks: Sequence[TrainCallback] = (),
    command: str = "train",
) -> int:
    """`scripts/train.py`: parse, check, train, report. Returns the process exit code.
    `callbacks` join the run's own (a sweep trial's pruning); under `--nprocs` each worker runs
    the launcher's `command` (`cli.worker`), which adds them on its rank again."""
    setup_logging()
    builder = None
    try:
        nprocs, argv = pop_nprocs(sys.argv[1:] if argv is None else argv)
        cfg = load_config(argv)
        if nprocs is not None and nprocs > 1:
            check(cfg)  # a config error is one line here, before any process starts
            return launch(command, argv, nprocs)
        builder = TrainContextBuilder(cfg).with_callbacks(
            *callbacks
        )  # its executor owns the process group (if any)
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
        release_output_dirs()
        close_executor(builder and builder.executor)
