"""The schema: the one flat training config, every key a user can set, its type, default and
allowed values, and the value rules that need no file (`TrainConfig.validate`).

Keys are flat (like the public fine-tuning config) so that a YAML file, a CLI flag and a Python
keyword all name the same thing. `params.md` documents every field; a test keeps them in sync.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kronos_engine.errors import ConfigError
from kronos_engine.layout import experiment_tokenizer

TRAIN_TYPES = ("tokenizer", "predictor")
DATA_SOURCES = ("demo", "csv", "qlib")
SAMPLING_MODES = ("uniform", "per_symbol")
SCHEDULERS = ("onecycle", "cosine", "constant", "sgdr", "wsd")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
BAD_DATA_POLICIES = ("error", "repair")
NAN_POLICIES = ("stop", "skip")
BEST_MODES = ("min", "max")
# Forecast metrics the forecast validation logs as `val_<name>` (kronos_engine.evaluation).
FORECAST_VAL_METRICS = (
    "mae", "rmse", "mape", "mase", "skill", "direction_accuracy", "crps", "coverage_80",
    "coverage_90", "ic", "icir", "rank_ic", "rank_icir",
)  # fmt: skip
TOKENIZER_PRESETS = ("tiny", "base")
PREDICTOR_PRESETS = ("tiny", "mini", "small", "base")
FINETUNE_METHODS = ("full", "lora", "freeze")
LOGGERS = ("tensorboard", "mlflow", "wandb", "comet")

# Public fine-tuning recipe defaults that depend on what is trained.
DEFAULT_LR = {"tokenizer": 2e-4, "predictor": 4e-5}
DEFAULT_MAX_GRAD_NORM = {"tokenizer": 2.0, "predictor": 3.0}

# Keys whose value must be one of a fixed set (checked by `validate`).
CHOICES: dict[str, tuple[str, ...]] = {
    "train_type": TRAIN_TYPES,
    "data_source": DATA_SOURCES,
    "sampling": SAMPLING_MODES,
    "scheduler": SCHEDULERS,
    "precision": PRECISIONS,
    "device": DEVICES,
    "bad_data": BAD_DATA_POLICIES,
    "nan_policy": NAN_POLICIES,
    "best_mode": BEST_MODES,
}


@dataclass
class TrainConfig:
    """Everything a training run needs. Grouped by the `group` metadata used by `--help`."""

    # --- run ---
    train_type: str = field(
        default="tokenizer",
        metadata={
            "group": "run",
            "help": "what to train: the BSQ tokenizer, or the predictor on a frozen tokenizer's ids",
        },
    )
    exp_dir: str = field(
        default="outputs/demo",
        metadata={
            "group": "run",
            "help": "experiment folder; a run writes to <exp_dir>/<train_type> unless output_dir is set",
        },
    )
    output_dir: str | None = field(
        default=None,
        metadata={
            "group": "run",
            "help": "folder this run writes to (default <exp_dir>/<train_type>)",
        },
    )
    seed: int = field(
        default=100,
        metadata={
            "group": "run",
            "help": "seed of model init, window sampling and dropout: same seed and config, same run",
        },
    )
    resume: str | None = field(
        default=None,
        metadata={
            "group": "run",
            "help": "continue from a checkpoint folder step_<N>, or the newest intact one under an output dir",
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "group": "run",
            "help": "start a fresh run in an output_dir that already holds one, deleting its "
            "checkpoints/, best/, metrics.jsonl and summary.json (otherwise that is an error)",
        },
    )
    strategy: str | None = field(
        default=None,
        metadata={
            "group": "run",
            "help": "loss strategy: a registered name or module:Class (default: by train_type)",
        },
    )
    callbacks: list[str] = field(
        default_factory=list,
        metadata={
            "group": "run",
            "help": "extra callbacks: registered names or module:Class; repeat the flag for several",
        },
    )

    # --- data ---
    data_source: str = field(
        default="demo",
        metadata={
            "group": "data",
            "help": "where the K-lines come from: built-in synthetic demo data, CSV/Parquet, or Qlib",
        },
    )
    data_path: str | None = field(
        default=None,
        metadata={
            "group": "data",
            "help": "CSV/Parquet file or folder (csv), or a Qlib provider folder (qlib)",
        },
    )
    instruments: str = field(
        default="all",
        metadata={
            "group": "data",
            "help": "'all', comma-separated symbols, or a Qlib universe name such as csi300",
        },
    )
    freq: str = field(
        default="day",
        metadata={"group": "data", "help": "bar frequency: 'day' or minutes such as '5min'"},
    )
    qlib_region: str = field(
        default="cn",
        metadata={"group": "data", "help": "Qlib region given to qlib.init (cn, us, tw)"},
    )
    dataset_begin_time: str | None = field(
        default=None,
        metadata={"group": "data", "help": "ignore rows before this time (e.g. 2011-01-01)"},
    )
    dataset_end_time: str | None = field(
        default=None, metadata={"group": "data", "help": "ignore rows after this time"}
    )
    train_time_range: list[str] | None = field(
        default=None,
        metadata={
            "group": "data",
            "help": "[start, end] of the train split; time ranges replace split_ratios",
        },
    )
    val_time_range: list[str] | None = field(
        default=None, metadata={"group": "data", "help": "[start, end] of the validation split"}
    )
    test_time_range: list[str] | None = field(
        default=None,
        metadata={
            "group": "data",
            "help": "[start, end] of the held-out test split (never trained on)",
        },
    )
    split_ratios: list[float] = field(
        default_factory=lambda: [0.8, 0.1, 0.1],
        metadata={
            "group": "data",
            "help": "train, val, test shares of each symbol's rows when no time ranges are set",
        },
    )
    lookback_window: int = field(
        default=90, metadata={"group": "data", "help": "history rows a window shows the model"}
    )
    predict_window: int = field(
        default=10,
        metadata={"group": "data", "help": "rows after the lookback that a window predicts"},
    )
    clip: float = field(
        default=5.0,
        metadata={"group": "data", "help": "normalised values are clipped to [-clip, clip]"},
    )
    sampling: str = field(
        default="uniform",
        metadata={
            "group": "data",
            "help": "uniform: any train window with replacement; per_symbol: a symbol first, then a window",
        },
    )
    train_samples_per_epoch: int | None = field(
        default=None,
        metadata={
            "group": "data",
            "help": "windows drawn per epoch (default: the number of train windows)",
        },
    )
    val_samples: int | None = field(
        default=None,
        metadata={
            "group": "data",
            "help": "evenly spaced validation windows per validation (default: all)",
        },
    )
    bad_data: str = field(
        default="error",
        metadata={
            "group": "data",
            "help": "error: stop at the first bad row; repair: fix it and count the fix",
        },
    )
    cache_dir: str | None = field(
        default=None,
        metadata={
            "group": "data",
            "help": "folder for processed splits, reused by later runs on the same data (default: none)",
        },
    )
    demo_symbols: int = field(
        default=4,
        metadata={"group": "data", "help": "number of symbols in the synthetic demo data"},
    )
    demo_length: int = field(
        default=800, metadata={"group": "data", "help": "bars per demo symbol"}
    )

    # --- model ---
    model_preset: str = field(
        default="tiny",
        metadata={
            "group": "model",
            "help": "model size when not fine-tuning: tokenizer tiny/base, predictor tiny/mini/small/base",
        },
    )
    pretrained_tokenizer: str | None = field(
        default=None,
        metadata={
            "group": "model",
            "help": "tokenizer folder or hub id to fine-tune (tokenizer run) or to encode with (predictor run)",
        },
    )
    pretrained_predictor: str | None = field(
        default=None, metadata={"group": "model", "help": "predictor folder or hub id to fine-tune"}
    )
    tokenizer_path: str | None = field(
        default=None,
        metadata={
            "group": "model",
            "help": "frozen tokenizer of a predictor run (default: pretrained_tokenizer, else <exp_dir>/tokenizer/best)",
        },
    )
    max_context: int = field(
        default=512,
        metadata={
            "group": "model",
            "help": "the predictor's context length; lookback_window + predict_window must fit in it",
        },
    )
    dropout: float | None = field(
        default=None,
        metadata={
            "group": "model",
            "help": "override every dropout probability of the model (null keeps the preset/checkpoint values)",
        },
    )
    teacher_forcing: bool = field(
        default=False,
        metadata={
            "group": "model",
            "help": "condition the s2 head on the true s1 id instead of a sampled one (predictor)",
        },
    )
    activation_checkpointing: bool = field(
        default=False,
        metadata={
            "group": "model",
            "help": "recompute activations in the backward pass to save memory",
        },
    )

    # --- optimisation ---
    lr: float | None = field(
        default=None,
        metadata={
            "group": "optim",
            "help": "peak learning rate (default 2e-4 for the tokenizer, 4e-5 for the predictor)",
        },
    )
    adam_beta1: float = field(default=0.9, metadata={"group": "optim", "help": "AdamW beta1"})
    adam_beta2: float = field(default=0.95, metadata={"group": "optim", "help": "AdamW beta2"})
    weight_decay: float = field(
        default=0.1, metadata={"group": "optim", "help": "AdamW weight decay"}
    )
    max_grad_norm: float | None = field(
        default=None,
        metadata={
            "group": "optim",
            "help": "clip gradients to this global norm (default 2.0 tokenizer, 3.0 predictor)",
        },
    )
    scheduler: str = field(
        default="onecycle",
        metadata={
            "group": "optim",
            "help": "LR schedule: onecycle (public recipe), cosine with warm-up, constant, sgdr "
            "(cosine with warm restarts) or wsd (warmup-stable-decay)",
        },
    )
    warmup_ratio: float = field(
        default=0.03,
        metadata={
            "group": "optim",
            "help": "share of the run's steps spent warming up the learning rate",
        },
    )
    div_factor: float = field(
        default=10.0, metadata={"group": "optim", "help": "warm-up starts at lr / div_factor"}
    )
    epochs: int = field(
        default=3, metadata={"group": "optim", "help": "passes of train_samples_per_epoch windows"}
    )
    max_steps: int | None = field(
        default=None,
        metadata={
            "group": "optim",
            "help": "stop after this many optimizer steps (the LR schedule then ends there)",
        },
    )
    batch_size: int = field(
        default=50, metadata={"group": "optim", "help": "windows per micro-batch per process"}
    )
    grad_accum_steps: int = field(
        default=1, metadata={"group": "optim", "help": "micro-batches per optimizer step"}
    )
    nan_policy: str = field(
        default="stop",
        metadata={
            "group": "optim",
            "help": "on a NaN/inf loss or gradient: stop with an error, or skip that update",
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "group": "optim",
            "help": "stop after this many validations without improvement (default: never)",
        },
    )

    # --- system ---
    device: str = field(
        default="auto", metadata={"group": "system", "help": "auto picks cuda when it is available"}
    )
    precision: str = field(
        default="fp32", metadata={"group": "system", "help": "fp32, or bf16 autocast"}
    )
    num_workers: int = field(
        default=0,
        metadata={"group": "system", "help": "DataLoader worker processes per training process"},
    )
    deterministic: bool = field(
        default=True,
        metadata={
            "group": "system",
            "help": "deterministic cuDNN kernels: reproducible, somewhat slower",
        },
    )

    # --- logging and checkpoints ---
    log_interval: int = field(
        default=10,
        metadata={
            "group": "logging",
            "help": "write a train record to metrics.jsonl every N steps (and at step 1)",
        },
    )
    val_interval: int | None = field(
        default=None,
        metadata={
            "group": "logging",
            "help": "validate every N steps (default: at each epoch end only)",
        },
    )
    forecast_val_origins: int | None = field(
        default=None,
        metadata={
            "group": "logging",
            "help": "at each validation also forecast this many validation origins (fixed, "
            "evenly spaced dates) and log val_mae, val_rank_ic, ... (predictor; default: off)",
        },
    )
    forecast_val_sample_count: int = field(
        default=1,
        metadata={
            "group": "logging",
            "help": "sample paths per forecast validation origin (>1 adds val_crps and coverage)",
        },
    )
    best_metric: str | None = field(
        default=None,
        metadata={
            "group": "logging",
            "help": "validation metric that picks best/ and drives early stopping, e.g. "
            "val_rank_ic (default: the strategy's val_loss / val_recon_mse)",
        },
    )
    best_mode: str = field(
        default="min",
        metadata={
            "group": "logging",
            "help": "min: a lower best_metric is better; max: higher is better (IC, skill)",
        },
    )
    ckpt_interval: int | None = field(
        default=None,
        metadata={
            "group": "logging",
            "help": "write a resumable checkpoint every N steps (also at epoch ends and at the end)",
        },
    )
    keep_last: int = field(
        default=3,
        metadata={"group": "logging", "help": "resumable checkpoints kept under checkpoints/"},
    )
    progress_bar: bool = field(
        default=True, metadata={"group": "logging", "help": "show a tqdm progress bar"}
    )

    # --- fine-tuning toolbox (issue 13) ---
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "group": "toolbox",
            "help": "label smoothing of the predictor's training cross-entropy (0: off, the public loss)",
        },
    )
    sgdr_cycle_steps: int | None = field(
        default=None,
        metadata={
            "group": "toolbox",
            "help": "scheduler=sgdr: steps of the first cosine cycle (default: a quarter of the run after warm-up)",
        },
    )
    sgdr_cycle_mult: int = field(
        default=1,
        metadata={
            "group": "toolbox",
            "help": "scheduler=sgdr: each cycle is this many times longer",
        },
    )
    finetune_method: str = field(
        default="full",
        metadata={
            "group": "toolbox",
            "help": "full: train every weight; lora: LoRA adapters through peft; freeze: all but freeze_patterns",
        },
    )
    lora_r: int = field(default=8, metadata={"group": "toolbox", "help": "LoRA rank"})
    lora_alpha: float = field(
        default=16.0,
        metadata={"group": "toolbox", "help": "LoRA scaling: updates are scaled by alpha / r"},
    )
    lora_dropout: float = field(
        default=0.05, metadata={"group": "toolbox", "help": "dropout on the LoRA branch's input"}
    )
    lora_targets: list[str] | None = field(
        default=None,
        metadata={
            "group": "toolbox",
            "help": "module names that get adapters (default: attention and FFN projections)",
        },
    )
    freeze_patterns: list[str] | None = field(
        default=None,
        metadata={
            "group": "toolbox",
            "help": "finetune_method=freeze: parameter-name patterns kept frozen (default: embeddings and the first block)",
        },
    )
    ema: bool = field(
        default=False,
        metadata={
            "group": "toolbox",
            "help": "keep an exponential moving average of the weights; validation and best/ use it",
        },
    )
    ema_decay: float = field(
        default=0.999,
        metadata={"group": "toolbox", "help": "ema: weight of the average at each step"},
    )
    wsd_decay_ratio: float = field(
        default=0.2,
        metadata={
            "group": "toolbox",
            "help": "scheduler=wsd: share of the run's steps spent decaying the lr to zero at the end",
        },
    )
    compile: bool = field(
        default=False,
        metadata={
            "group": "toolbox",
            "help": "torch.compile the trained model (in place: checkpoints keep plain keys)",
        },
    )
    loggers: list[str] = field(
        default_factory=list,
        metadata={
            "group": "toolbox",
            "help": "experiment trackers fed with the metrics.jsonl records: tensorboard, mlflow, wandb, comet",
        },
    )
    tracking_uri: str | None = field(
        default=None,
        metadata={
            "group": "toolbox",
            "help": "mlflow: tracking URI (default: sqlite:///<output_dir>/mlflow.db)",
        },
    )
    experiment_name: str | None = field(
        default=None,
        metadata={
            "group": "toolbox",
            "help": "mlflow experiment / wandb and comet project (default: kronos-engine)",
        },
    )
    run_name: str | None = field(
        default=None,
        metadata={"group": "toolbox", "help": "display name of the tracked run"},
    )
    tracking_mode: str = field(
        default="online",
        metadata={
            "group": "toolbox",
            "help": "wandb and comet: online, or offline (kept under output_dir, uploaded later)",
        },
    )

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
        """Check value ranges and combinations that do not need any file."""
        self._check_numbers()
        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise ConfigError(f"{key}: '{value}' is not allowed; choose one of {list(allowed)}")
        presets = TOKENIZER_PRESETS if self.train_type == "tokenizer" else PREDICTOR_PRESETS
        if self.model_preset not in presets:
            raise ConfigError(
                f"model_preset: '{self.model_preset}' is not a {self.train_type} preset; "
                f"choose one of {list(presets)}"
            )
        positive = ["lookback_window", "predict_window", "batch_size", "grad_accum_steps"]
        positive += ["epochs", "log_interval", "keep_last", "demo_symbols", "demo_length"]
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        for key in ["max_steps", "val_interval", "ckpt_interval", "train_samples_per_epoch"]:
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key}: must be >= 1 or null, got {value}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: must lie in [0, 1) or be null, got {self.dropout}")
        for key in ["val_samples", "early_stopping_patience", "forecast_val_origins"]:
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key}: must be >= 1 or null, got {value}")
        if self.forecast_val_sample_count < 1:
            raise ConfigError(
                f"forecast_val_sample_count: must be >= 1, got {self.forecast_val_sample_count}"
            )
        if self.forecast_val_origins is not None and self.train_type != "predictor":
            raise ConfigError(
                "forecast_val_origins: forecasts need a predictor; set it only with "
                "train_type predictor"
            )
        forecast_names = {f"val_{name}" for name in FORECAST_VAL_METRICS}
        if self.best_metric in forecast_names and self.forecast_val_origins is None:
            raise ConfigError(
                f"best_metric: '{self.best_metric}' is a forecast metric; set "
                "forecast_val_origins (e.g. 256) to compute it at each validation"
            )
        if self.best_mode == "max" and self.best_metric is None:
            raise ConfigError(
                "best_mode: 'max' needs best_metric (the default metric is a loss, lower is "
                "better); set best_metric, e.g. val_rank_ic"
            )
        if self.div_factor <= 0:
            raise ConfigError(f"div_factor: must be > 0, got {self.div_factor}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(
                f"max_grad_norm: must be > 0 (use .inf to only measure the norm) or null for "
                f"the default, got {self.max_grad_norm}"
            )
        if self.num_workers < 0:
            raise ConfigError(f"num_workers: must be >= 0, got {self.num_workers}")
        if self.clip <= 0:
            raise ConfigError(f"clip: must be > 0, got {self.clip}")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if not (0.0 <= self.adam_beta1 < 1.0 and 0.0 <= self.adam_beta2 < 1.0):
            raise ConfigError("adam_beta1/adam_beta2: must lie in [0, 1)")
        if not 0.0 < self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio: must lie in (0, 1), got {self.warmup_ratio}")
        if len(self.split_ratios) != 3 or any(r < 0 for r in self.split_ratios):
            raise ConfigError("split_ratios: must be three non-negative numbers [train, val, test]")
        if abs(sum(self.split_ratios) - 1.0) > 1e-6:
            raise ConfigError(f"split_ratios: must sum to 1, got {self.split_ratios}")
        for key in ["train_time_range", "val_time_range", "test_time_range"]:
            value = getattr(self, key)
            if value is not None and len(value) != 2:
                raise ConfigError(f"{key}: must be [start, end], got {value}")
        if self.data_source == "demo" and self.data_path:
            raise ConfigError(
                f"data_path: '{self.data_path}' is set but data_source is 'demo' (the built-in "
                f"synthetic data); add --data_source=csv (or qlib) to train on it"
            )
        if self.data_source != "demo" and not self.data_path:
            raise ConfigError(f"data_path: required when data_source is '{self.data_source}'")
        if self.lookback_window + self.predict_window > self.max_context:
            raise ConfigError(
                f"lookback_window: lookback_window + predict_window = "
                f"{self.lookback_window + self.predict_window} exceeds max_context "
                f"{self.max_context}; lower the windows or raise max_context"
            )
        self.validate_toolbox()

    def validate_toolbox(self) -> None:
        """Ranges of the fine-tuning toolbox keys (label smoothing, schedules, LoRA, EMA, ...)."""
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing: must lie in [0, 1), got {self.label_smoothing}")
        if self.sgdr_cycle_steps is not None and self.sgdr_cycle_steps < 1:
            raise ConfigError(
                f"sgdr_cycle_steps: must be >= 1 or null, got {self.sgdr_cycle_steps}"
            )
        if self.sgdr_cycle_mult < 1:
            raise ConfigError(f"sgdr_cycle_mult: must be >= 1, got {self.sgdr_cycle_mult}")
        if self.finetune_method not in FINETUNE_METHODS:
            raise ConfigError(
                f"finetune_method: '{self.finetune_method}' is not allowed; "
                f"choose one of {list(FINETUNE_METHODS)}"
            )
        if self.lora_r < 1 or self.lora_alpha <= 0:
            raise ConfigError(
                f"lora_r, lora_alpha: must be >= 1 and > 0, got {self.lora_r}, {self.lora_alpha}"
            )
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout: must lie in [0, 1), got {self.lora_dropout}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay: must lie in (0, 1), got {self.ema_decay}")
        for name in self.loggers:
            if name not in LOGGERS:
                raise ConfigError(f"loggers: '{name}' is not allowed; choose from {list(LOGGERS)}")
        if self.tracking_mode not in ("online", "offline"):
            raise ConfigError(
                f"tracking_mode: '{self.tracking_mode}' is not allowed; choose one of "
                "['online', 'offline']"
            )
        if not 0.0 <= self.wsd_decay_ratio <= 1.0:
            raise ConfigError(f"wsd_decay_ratio: must lie in [0, 1], got {self.wsd_decay_ratio}")

    def _check_numbers(self) -> None:
        """NaN/inf and integers beyond 64 bits fail here, naming the key, rather than as a
        traceback or a NaN loss later. Only `max_grad_norm` may be infinite (measure only)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, bool) or not isinstance(item, (int, float)):
                    continue
                if isinstance(item, float) and math.isnan(item):
                    raise ConfigError(f"{f.name}: must be a number, got nan")
                if isinstance(item, float) and math.isinf(item) and f.name != "max_grad_norm":
                    raise ConfigError(f"{f.name}: must be finite, got {item}")
                if isinstance(item, int) and not -(2**63) <= item < 2**63:
                    raise ConfigError(f"{f.name}: {item} does not fit in 64 bits")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed: must lie in [0, 2**63 - 1], got {self.seed}")


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
