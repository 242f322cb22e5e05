"""Where each file of a run folder lives (`RunLayout`, the one place that names them) and how an
experiment dir holds one run per stage. Names only: nothing here touches the disk, so every layer
(the config's default paths included) asks this module instead of spelling a name again.

Layout of `<output_dir>/` (`RunLayout(output_dir)`):
  config.yaml        `.config`            the resolved run config (written atomically)
  checkpoints/       `.checkpoints`       resumable `step_<N>/` folders (`run.checkpoints`)
  best/              `.best`              the best validated model, public layout
  metrics.jsonl      `.metrics`           one record per line
  summary.json       `.summary`           how the run ended
  frozen_tokenizer/  `.frozen_tokenizer`  predictor runs: the tokenizer they read
  .lock              `.lock`              held while the run runs (`run.outputs`)
An experiment dir holds one run per stage: `stage_run(exp_dir, "tokenizer").best` is the
experiment's tokenizer (`experiment_tokenizer(exp_dir)`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BEST_DIR = "best"
CHECKPOINTS_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
FROZEN_TOKENIZER_DIR = "frozen_tokenizer"
LOCK_NAME = ".lock"


@dataclass(frozen=True)
class RunLayout:
    """Where each file of the run in `root` lives. Every module asks this for a run's paths."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def best(self) -> Path:
        return self.root / BEST_DIR

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY_FILE

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def frozen_tokenizer(self) -> Path:
        return self.root / FROZEN_TOKENIZER_DIR

    @property
    def lock(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def outputs(self) -> tuple[Path, ...]:
        """What a run writes besides its config: a folder holding any of these holds a run."""
        return (self.checkpoints, self.best, self.metrics, self.summary, self.frozen_tokenizer)


def stage_run(exp_dir: str | os.PathLike[str], train_type: str) -> RunLayout:
    """The run of one stage (`tokenizer`, `predictor`) of an experiment dir."""
    return RunLayout(Path(exp_dir) / train_type)


def experiment_tokenizer(exp_dir: str | os.PathLike[str]) -> Path:
    """The experiment's fine-tuned tokenizer: `<exp_dir>/tokenizer/best`."""
    return stage_run(exp_dir, "tokenizer").best
