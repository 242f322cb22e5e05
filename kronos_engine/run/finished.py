"""Read a finished run: its `config.yaml` as recorded, its best model, the tokenizer it read.

The one reader of a run's `config.yaml` for the commands that use a finished run (predict,
evaluate, backtest). The file is read as a plain mapping, never rebuilt into a training
config: a forecast needs only the run's data settings, windows, `clip` and tokenizer, and a
run's recorded config need not pass today's training checks (a key a later version dropped,
a `max_context` the forecast does not use) to be read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from kronos_engine.config.loading import config_keys
from kronos_engine.config.schema import TrainConfig, coerce, field_type, predictor_tokenizer
from kronos_engine.errors import ConfigError, ForecastError
from kronos_engine.layout import FROZEN_TOKENIZER_DIR, RunLayout, stage_run

log = logging.getLogger("kronos_engine")

# Where a run written without `exp_dir` looked for `<exp_dir>/tokenizer/best`: the default.
DEFAULT_EXP_DIR: str = TrainConfig.exp_dir


def read_run_config(run: str | Path) -> dict[str, Any]:
    """`<run>/config.yaml` as a plain mapping of its keys; `{}` when the run has none. An
    unreadable file, or one that is not a mapping, is a `ForecastError` naming it."""
    file = RunLayout(run).config
    if not file.is_file():
        return {}
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ForecastError(
            f"{file}: unreadable run config ({' '.join(str(exc).split())})"
        ) from None
    if not isinstance(data, dict):
        raise ForecastError(f"{file}: expected a mapping of config keys")
    return data


def find_run_config(path: str | Path, train_type: str = "predictor") -> dict[str, Any]:
    """The config of `<path>/<train_type>` (`path` an experiment dir) when it has one, else of
    `path` itself (a run dir); `{}` when neither has one. Values are typed (`typed_config`)."""
    stage = stage_run(path, train_type)
    run = stage.root if stage.config.is_file() else path
    return typed_config(run, read_run_config(run))


def typed_config(run: str | Path, config: dict[str, Any]) -> dict[str, Any]:
    """The recorded keys that are training config keys, as the training config's types (so a
    forecast never computes with `clip: '5'`); keys a later version dropped are kept as
    written. A value of another type (`clip: abc`) is a `ForecastError` naming file and key."""
    known = config_keys()
    try:
        return {k: coerce(k, v, field_type(k)) if k in known else v for k, v in config.items()}
    except ConfigError as exc:
        raise ForecastError(f"{RunLayout(run).config}: {exc}") from None


@dataclass(frozen=True)
class PredictorRun:
    """A finished predictor run: its folders and the settings a forecast from it needs."""

    run_dir: Path
    predictor_dir: Path
    tokenizer_dir: Path
    config: dict  # the run's config.yaml as recorded ({} when it has none)

    @property
    def clip(self) -> float:
        return self.recorded("clip", 5.0)

    @property
    def lookback_window(self) -> int | None:
        """The run's `lookback_window` as recorded (`None` when absent; callers check it)."""
        return self.recorded("lookback_window")

    @property
    def predict_window(self) -> int | None:
        """The run's `predict_window` as recorded (`None` when absent; callers check it)."""
        return self.recorded("predict_window")

    def recorded(self, key: str, default: Any = None) -> Any:
        """`key` of the run's (typed) config, `default` when absent."""
        return self.config.get(key, default)


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
    config = typed_config(run, read_run_config(run))
    if config.get("train_type", "predictor") != "predictor":
        raise ForecastError(f"{run}: is a {config['train_type']} run, not a predictor run")
    return PredictorRun(run, best, _tokenizer_dir(run, config), config)


def _tokenizer_dir(run: Path, config: dict) -> Path:
    """The run's own copy of its tokenizer; runs from before it was kept fall back to the
    recorded `tokenizer_path` by the training config's tokenizer rule (which may have changed
    on disk since)."""
    frozen = RunLayout(run).frozen_tokenizer
    if frozen.is_dir():
        return frozen

    recorded = ("tokenizer_path", "pretrained_tokenizer", "exp_dir")
    if not any(key in config for key in recorded):
        raise ForecastError(
            f"{run}: cannot tell which tokenizer its predictor was trained with (no "
            f"{FROZEN_TOKENIZER_DIR}/ and no {'/'.join(recorded)} in a config.yaml); give "
            f"the tokenizer explicitly (predict.py --tokenizer T --predictor {RunLayout(run).best})"
        )
    try:
        keys = {
            key: coerce(key, config.get(key), str | None)
            for key in ("tokenizer_path", "pretrained_tokenizer")
        }
        keys["exp_dir"] = coerce("exp_dir", config.get("exp_dir", DEFAULT_EXP_DIR), str)
    except ConfigError as exc:
        raise ForecastError(f"{run}: cannot tell which tokenizer it used ({exc})") from None
    path = Path(predictor_tokenizer(SimpleNamespace(**keys)))
    log.warning(
        "%s has no %s/ (trained before runs kept their tokenizer); using %s",
        run, FROZEN_TOKENIZER_DIR, path,
    )  # fmt: skip
    return path
