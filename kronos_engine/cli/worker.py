"""What each `--nprocs` worker runs: `python -m kronos_engine.cli.worker
train|pipeline|predict|evaluate ARGS`, the normal entry of that command under the torchrun
environment the elastic agent set; a sweep runs each trial as `... worker sweep_trial ARGS`
(also without `--nprocs`)."""

from __future__ import annotations

import sys

from kronos_engine.cli import evaluate, pipeline, predict, sweep, train

COMMANDS = {
    "train": train.main,
    "pipeline": pipeline.pipeline_main,
    "predict": predict.main,
    "evaluate": evaluate.main,
    "sweep_trial": sweep.trial_main,  # one sweep trial: train.main with its pruning callback
}


def run(args: list[str]) -> int:
    command, *argv = args
    return COMMANDS[command](argv)


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
