"""Find what a predictor run produced: its best model, the tokenizer it read, its config."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from kronos_engine.errors import ForecastError
from kronos_engine.layout import FROZEN_TOKENIZER_DIR, RunLayout, stage_run

log = logging.getLogger("kronos_engine")


@dataclass(frozen=True)
class PredictorRun:
    """The folders and settings a forecast from a predictor run needs."""

    run_dir: Path
    predictor_dir: Path
    tokenizer_dir: Path
    config: dict

    @property
    def clip(self) -> float:
        return float(self.config.get("clip", 5.0))


def find_predictor_run(path: str | Path) -> PredictorRun:
    """`path` is an experiment dir (with `predictor/`) or a predictor run dir (with `best/`)."""
    path = Path(path)
    stage = stage_run(path, "predictor")
    run = stage.root if stage.best.is_dir() else path
    best = RunLayout(run).best
    if not best.is_dir():
        raise ForecastError(
            f"{path}: no trained predictor here (expected {stage.best} or "
            f"{best}); train one with scripts/train.py --train_type=predictor"
        )
    config = _read_run_config(run)
    if config.get("train_type", "predictor") != "predictor":
        raise ForecastError(f"{run}: is a {config['train_type']} run, not a predictor run")
    return PredictorRun(run, best, _tokenizer_dir(run, config), config)


def _read_run_config(run: Path) -> dict:
    file = RunLayout(run).config
    if not file.is_file():
        return {}
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ForecastError(
            f"{file}: unreadable run config ({' '.join(str(exc).split())})"
        ) from None
    if not isinstance(data, dict):
        raise ForecastError(f"{file}: expected a mapping of config keys")
    return data


def _tokenizer_dir(run: Path, config: dict) -> Path:
    """The run's own copy of its tokenizer; runs from before it was kept fall back to the
    config's tokenizer rule (which may have changed on disk since)."""
    frozen = RunLayout(run).frozen_tokenizer
    if frozen.is_dir():
        return frozen
    from kronos_engine.config import TrainConfig

    try:
        resolved = TrainConfig.from_dict(config, source=str(RunLayout(run).config))
    except ValueError as exc:
        raise ForecastError(f"{run}: cannot tell which tokenizer it used ({exc})") from None
    path = Path(resolved.resolved_tokenizer_path)
    log.warning(
        "%s has no %s/ (trained before runs kept their tokenizer); using %s",
        run, FROZEN_TOKENIZER_DIR, path,
    )  # fmt: skip
    return path
