"""The schema: the one flat training config, every key a user can set, its type, default and
allowed values, and the value rules that need no file (`TrainConfig.validate`).

Keys are flat (like the public fine-tuning config) so that a YAML file, a CLI flag and a Python
keyword all name the same thing. `params.md` documents every field; a test keeps them in sync.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kronos_engine.config import rules
from kronos_engine.config.choices import (
    DEFAULT_LR,
    DEFAULT_MAX_GRAD_NORM,
)
from kronos_engine.errors import ConfigError
from kronos_engine.layout import experiment_tokenizer


def option(default: Any, group: str, help: str, **extra: Any) -> Any:
    """One config key: a dataclass field with its default, its `--help` group and help text (and
    any `extra` metadata). A list or dict default is copied for each config (`default_factory`)."""
    metadata = {"group": group, "help": help, **extra}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything a training run needs. Grouped by the `group` metadata used by `--help`."""

    # One key a line or two: name, type, option(default, group, help).
    # fmt: off
    # --- run ---
    train_type: str = option("tokenizer", "run",
        "what to train: the BSQ tokenizer, or the predictor on a frozen tokenizer's ids")
    exp_dir: str = option("outputs/demo", "run",
        "experiment folder; a run writes to <exp_dir>/<train_type> unless output_dir is set")
    output_dir: str | None = option(None, "run",
        "folder this run writes to (default <exp_dir>/<train_type>)")
    seed: int = option(100, "run",
        "seed of model init, window sampling and dropout: same seed and config, same run")
    resume: str | None = option(None, "run",
        "continue from a checkpoint folder step_<N>, or the newest intact one under an output dir")
    overwrite: bool = option(False, "run",
        "start a fresh run in an output_dir that already holds one, deleting its checkpoints/, "
        "best/, metrics.jsonl and summary.json (otherwise that is an error)")
    strategy: str | None = option(None, "run",
        "loss strategy: a registered name or module:Class (default: by train_type)")
    callbacks: list[str] = option([], "run",
        "extra callbacks: registered names or module:Class; repeat the flag for several")

    # --- data ---
    data_source: str = option("auto", "data",
        "where the K-lines come from: auto (told by data_path: demo without one, csv for a "
        "CSV/Parquet file or folder, qlib for a folder with calendars/ and features/), the "
        "built-in synthetic demo data, CSV/Parquet, Qlib, or fetched from Sina (sina) or a "
        "crypto exchange (ccxt) into data_path")
    data_path: str | None = option(None, "data",
        "CSV/Parquet file or folder (csv), a Qlib provider folder (qlib), or the folder "
        "fetched bars are stored in (sina, ccxt)")
    instruments: str = option("all", "data",
        "'all', comma-separated symbols, or a Qlib universe name such as csi300")
    freq: str = option(
        "auto", "data",
        "bar length: 'auto' (read from the data), 'day' or minutes such as '5min'",
    )  # fmt: skip
    qlib_region: str = option("cn", "data", "Qlib region given to qlib.init (cn, us, tw)")
    dataset_begin_time: str | None = option(None, "data",
        "ignore rows before this time (e.g. 2011-01-01)")
    dataset_end_time: str | None = option(None, "data", "ignore rows after this time")
    train_time_range: list[str] | None = option(None, "data",
        "[start, end] of the train split; time ranges replace split_ratios")
    val_time_range: list[str] | None = option(None, "data", "[start, end] of the validation split")
    test_time_range: list[str] | None = option(None, "data",
        "[start, end] of the held-out test split (never trained on)")
    split_ratios: list[float] = option([0.8, 0.1, 0.1], "data",
        "train, val, test shares of each symbol's rows when no time ranges are set")
    lookback_window: int = option(90, "data", "history rows a window shows the model")
    predict_window: int = option(10, "data", "rows after the lookback that a window predicts")
    clip: float = option(5.0, "data", "normalised values are clipped to [-clip, clip]")
    sampling: str = option("uniform", "data",
        "uniform: any train window with replacement; per_symbol: a symbol first, then a window")
    train_samples_per_epoch: int | None = option(None, "data",
        "windows drawn per epoch (default: the number of train windows)")
    val_samples: int | None = option(None, "data",
        "evenly spaced validation windows per validation (default: all)")
    bad_data: str = option("error", "data",
        "error: stop at the first bad row; repair: fix it and count the fix")
    cache_dir: str | None = option(None, "data",
        "folder for processed splits, reused by later runs on the same data (default: none)")
    demo_symbols: int = option(4, "data", "number of symbols in the synthetic demo data")
    demo_length: int = option(800, "data", "bars per demo symbol")
    # market sources (issue 20): fetched into data_path by scripts/download.py or pipeline.py
    sina_url: str = option("https://quotes.sina.cn/cn/api/jsonp_v2.php/=/CN_MarketDataService.getKLineData", "data",
        "sina: the K-line service's URL (a mirror or proxy; default: Sina's own endpoint)")
    exchange: str | None = option(None, "data",
        "ccxt: the exchange id, such as binance, okx, bybit (required with data_source ccxt)")
    exchange_api_url: str | None = option(None, "data",
        "ccxt: send every API request of the exchange to this host instead (mirror, proxy)")
    fetch_since: str | None = option(None, "data",
        "ccxt: first bar to fetch for a symbol the folder does not hold yet (default: the "
        "exchange's most recent page)")
    fetch_timeout: float = option(15.0, "data", "sina/ccxt: seconds to wait for one answer")
    fetch_retries: int = option(5, "data",
        "sina/ccxt: extra attempts after throttling, a server error or a lost connection")
    fetch_backoff: float = option(1.0, "data",
        "sina/ccxt: seconds before the first retry; doubled for each further one")
    fetch_interval: float = option(0.5, "data",
        "sina/ccxt: at least this many seconds between two requests (a polite rate)")

    # --- model ---
    model_preset: str = option("tiny", "model",
        "model size when not fine-tuning: tokenizer tiny/base, predictor tiny/mini/small/base")
    pretrained_tokenizer: str | None = option(None, "model",
        "tokenizer folder or hub id to fine-tune (tokenizer run) or to encode with (predictor run)")
    pretrained_predictor: str | None = option(None, "model",
        "predictor folder or hub id to fine-tune")
    tokenizer_path: str | None = option(None, "model",
        "frozen tokenizer of a predictor run (default: pretrained_tokenizer, else "
        "<exp_dir>/tokenizer/best)")
    max_context: int = option(512, "model",
        "the predictor's context length: a forecast sees at most this many bars (longer "
        "training windows train, with a warning)")
    dropout: float | None = option(None, "model",
        "override every dropout probability of the model (null keeps the preset/checkpoint values)")
    teacher_forcing: bool = option(False, "model",
        "condition the s2 head on the true s1 id instead of a sampled one (predictor)")
    activation_checkpointing: bool = option(False, "model",
        "recompute activations in the backward pass to save memory")

    # --- optimisation ---
    lr: float | None = option(None, "optim",
        "peak learning rate (default 2e-4 for the tokenizer, 4e-5 for the predictor)")
    adam_beta1: float = option(0.9, "optim", "AdamW beta1")
    adam_beta2: float = option(0.95, "optim", "AdamW beta2")
    weight_decay: float = option(0.1, "optim", "AdamW weight decay")
    max_grad_norm: float | None = option(None, "optim",
        "clip gradients to this global norm (default 2.0 tokenizer, 3.0 predictor)")
    scheduler: str = option("onecycle", "optim",
        "LR schedule: onecycle (public recipe), cosine with warm-up, constant, sgdr (cosine with "
        "warm restarts) or wsd (warmup-stable-decay)")
    warmup_ratio: float = option(0.03, "optim",
        "share of the run's steps spent warming up the learning rate")
    div_factor: float = option(10.0, "optim", "warm-up starts at lr / div_factor")
    epochs: int = option(3, "optim", "passes of train_samples_per_epoch windows")
    max_steps: int | None = option(None, "optim",
        "stop after this many optimizer steps (the LR schedule then ends there)")
    batch_size: int = option(50, "optim", "windows per micro-batch per process")
    grad_accum_steps: int = option(1, "optim", "micro-batches per optimizer step")
    nan_policy: str = option("stop", "optim",
        "on a NaN/inf loss or gradient: stop with an error, or skip that update")
    early_stopping_patience: int | None = option(None, "optim",
        "stop after this many validations without improvement (default: never)")

    # --- system ---
    device: str = option("auto", "system",
        "auto picks cuda when it is available; or cpu, cuda, one GPU cuda:N")
    precision: str = option("fp32", "system", "fp32, or bf16 autocast")
    num_workers: int = option(0, "system", "DataLoader worker processes per training process")
    deterministic: bool = option(True, "system",
        "deterministic cuDNN kernels: reproducible, somewhat slower")

    # --- logging and checkpoints ---
    log_interval: int = option(10, "logging",
        "write a train record to metrics.jsonl every N steps (and at step 1)")
    val_interval: int | None = option(None, "logging",
        "validate every N steps (default: at each epoch end only)")
    forecast_val_origins: int | None = option(None, "logging",
        "at each validation also forecast this many validation origins (fixed, evenly spaced "
        "dates) and log val_mae, val_rank_ic, ... (predictor; default: off)")
    forecast_val_sample_count: int = option(1, "logging",
        "sample paths per forecast validation origin (>1 adds val_crps and coverage)")
    best_metric: str | None = option(None, "logging",
        "validation metric that picks best/ and drives early stopping, e.g. val_rank_ic (default: "
        "the strategy's val_loss / val_recon_mse)")
    best_mode: str = option("min", "logging",
        "min: a lower best_metric is better; max: higher is better (IC, skill)")
    ckpt_interval: int | None = option(None, "logging",
        "write a resumable checkpoint every N steps (also at epoch ends and at the end)")
    keep_last: int = option(3, "logging", "resumable checkpoints kept under checkpoints/")
    progress_bar: bool = option(True, "logging", "show a tqdm progress bar")

    # --- fine-tuning toolbox (issue 13) ---
    label_smoothing: float = option(0.0, "toolbox",
        "label smoothing of the predictor's training cross-entropy (0: off, the public loss)")
    sgdr_cycle_steps: int | None = option(None, "toolbox",
        "scheduler=sgdr: steps of the first cosine cycle (default: a quarter of the run after "
        "warm-up)")
    sgdr_cycle_mult: int = option(1, "toolbox",
        "scheduler=sgdr: each cycle is this many times longer")
    finetune_method: str = option("full", "toolbox",
        "full: train every weight; lora: LoRA adapters through peft; freeze: all but "
        "freeze_patterns")
    lora_r: int = option(8, "toolbox", "LoRA rank")
    lora_alpha: float = option(16.0, "toolbox", "LoRA scaling: updates are scaled by alpha / r")
    lora_dropout: float = option(0.05, "toolbox", "dropout on the LoRA branch's input")
    lora_targets: list[str] | None = option(None, "toolbox",
        "module names that get adapters (default: attention and FFN projections)")
    freeze_patterns: list[str] | None = option(None, "toolbox",
        "finetune_method=freeze: parameter-name patterns kept frozen (default: embeddings and the "
        "first block)")
    ema: bool = option(False, "toolbox",
        "keep an exponential moving average of the weights; validation and best/ use it")
    ema_decay: float = option(0.999, "toolbox", "ema: weight of the average at each step")
    wsd_decay_ratio: float = option(0.2, "toolbox",
        "scheduler=wsd: share of the run's steps spent decaying the lr to zero at the end")
    compile: bool = option(False, "toolbox",
        "torch.compile the trained model (in place: checkpoints keep plain keys)")
    loggers: list[str] = option([], "toolbox",
        "experiment trackers fed with the metrics.jsonl records: tensorboard, mlflow, wandb, comet")
    tracking_uri: str | None = option(None, "toolbox",
        "mlflow: tracking URI (default: sqlite:///<output_dir>/mlflow.db)")
    experiment_name: str | None = option(None, "toolbox",
        "mlflow experiment / wandb and comet project (default: kronos-engine)")
    run_name: str | None = option(None, "toolbox", "display name of the tracked run")
    tracking_mode: str = option("online", "toolbox",
        "wandb and comet: online, or offline (kept under output_dir, uploaded later)")
    # fmt: on

    # ----- derived values (not config keys) -----
    @property
    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(self.exp_dir) / self.train_type

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.train_type]

    @property
    def resolved_max_grad_norm(self) -> float:
        if self.max_grad_norm is not None:
            return self.max_grad_norm
        return DEFAULT_MAX_GRAD_NORM[self.train_type]

    @property
    def resolved_tokenizer_path(self) -> str:
        """The predictor's frozen tokenizer by `predictor_tokenizer`'s rule. `check` records it in
        `tokenizer_path`, so from then on the answer no longer depends on the disk."""
        return predictor_tokenizer(self)

    @property
    def window_len(self) -> int:
        return self.lookback_window + self.predict_window + 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build a validated config; unknown keys and wrong types raise `ConfigError`."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown key '{key}' (see params.md for the allowed keys)"
                )
            kwargs[key] = coerce(key, value, field_type(key))
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check value ranges and combinations that do not need any file (`config.rules`)."""
        rules.validate(self)

    def validate_toolbox(self) -> None:
        """Ranges of the fine-tuning toolbox keys (label smoothing, schedules, LoRA, EMA, ...)."""
        rules.validate_toolbox(self)


def field_type(key: str) -> Any:
    hints = typing.get_type_hints(TrainConfig)
    return hints[key]


def predictor_tokenizer(cfg: TrainConfig, *, trained_first: bool = False) -> str:
    """The one rule for a predictor's frozen tokenizer: `tokenizer_path` when set, else the
    experiment's own `<exp_dir>/tokenizer/best` when it exists (or an earlier stage trains it:
    `trained_first`), else `pretrained_tokenizer`, else `<exp_dir>/tokenizer/best` (missing:
    `model_factory.require_tokenizer_path` says how to make it)."""
    if cfg.tokenizer_path:
        return cfg.tokenizer_path
    own = experiment_tokenizer(cfg.exp_dir)
    if trained_first or own.exists() or not cfg.pretrained_tokenizer:
        return str(own)
    return cfg.pretrained_tokenizer


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); any other type -> (it, False)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert YAML/CLI values to the field's type; reject anything ambiguous."""
    base, optional = unwrap_optional(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
        if optional:
            return None
        raise ConfigError(f"{key}: may not be null")
    origin = typing.get_origin(base)
    if origin is list:
        (item_tp,) = typing.get_args(base)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [coerce(key, v, item_tp) for v in value]
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if base is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value))
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if base is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if base is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp}")
