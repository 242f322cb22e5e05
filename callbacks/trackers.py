"""Experiment trackers (`loggers: [tensorboard, mlflow, wandb, comet]`): each sends the records
that go to `metrics.jsonl`, the resolved config as hyper-parameters and, where the tool keeps
artifacts, `best/` at the end. Rank 0 only. The run id is saved in every checkpoint, so a resumed
run continues the same tracked run instead of starting a new one."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

from kronos_engine.callbacks.mlflow_uri import check_tracking_uri

from kronos_engine.config import TrainConfig
from kronos_engine.context import TrainContext
from kronos_engine.errors import TrainingError
from kronos_engine.extras import LOGGER_PACKAGES, require
from kronos_engine.layout import RunLayout
from kronos_engine.registry import CALLBACKS
from kronos_engine.training.records import MetricsFeed

log = logging.getLogger("kronos_engine")

DEFAULT_EXPERIMENT = "kronos-engine"
NOT_METRICS = ("type", "step", "epoch")


def flat_config(ctx: TrainContext) -> dict[str, Any]:
    """The resolved config as scalar hyper-parameters (lists and null as text); `resume` and
    `overwrite` describe an invocation, not the run, and are left out."""
    values = {}
    for key, value in ctx.cfg.to_dict().items():
        if key in ("resume", "overwrite"):
            continue
        values[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return values


def metrics_of(record: dict[str, Any]) -> dict[str, float]:
    """`train/loss`, `val/val_loss`, ...: the numeric fields of a record, named by its type."""
    return {
        f"{record['type']}/{key}": float(value)
        for key, value in record.items()
        if key not in NOT_METRICS
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    }


class Tracker(MetricsFeed):
    """A sink of the metrics records (`MetricsFeed` builds them); a tool implements `start`,
    `log_dict`, `upload_best` and `finish`."""

    name = "tracker"

    def __init__(self, log_interval: int = 10) -> None:
        super().__init__(log_interval)
        self.run_id: str | None = None  # restored from the checkpoint on resume
        self.active = False

    # ---- the tool ----
    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        """Before any run folder exists (`training.preflight.check_trackers`): the tool is
        installed and its settings are usable, as far as that can be told offline."""
        require(LOGGER_PACKAGES[cls.name], "loggers", cls.name)

    def start(self, ctx: TrainContext, resumed: bool) -> str:
        """Open the tracked run (a new one, or `self.run_id` when resumed); return its id."""
        raise NotImplementedError

    def log_dict(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def upload_best(self, best: Path) -> None:
        """Keep `best/` as an artifact (tools without artifacts do nothing)."""

    def finish(self, status: str) -> None:
        """`status`: completed, stopped (signal; resumable) or failed."""
        raise NotImplementedError

    # ---- hooks ----
    def on_train_begin(self, ctx: TrainContext) -> None:
        if not ctx.is_main:
            return
        require(LOGGER_PACKAGES[self.name], "loggers", self.name)
        resumed = self.run_id is not None
        try:
            self.run_id = self.start(ctx, resumed)
        except Exception as exc:  # a server that is down, credentials it refused, ...
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise TrainingError(
                f"loggers: {self.name} could not start its run ({type(exc).__name__}: {reason})"
            ) from exc
        self.active = True
        log.info("%s: %s run %s", self.name, "continuing" if resumed else "started", self.run_id)

    def on_train_end(self, ctx: TrainContext) -> None:
        if self.active:
            best = RunLayout(ctx.output_dir).best
            if best.is_dir():
                self.upload_best(best)
        super().on_train_end(ctx)  # close(status)

    # ---- the sink ----
    def log(self, record: dict[str, Any]) -> None:
        if self.active:
            self.log_dict(metrics_of(record), record["step"])

    def close(self, status: str) -> None:
        if self.active:
            self.active = False
            self.finish(status)

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id} if self.run_id else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


@CALLBACKS.register("tensorboard")
class TensorBoardTracker(Tracker):
    """Event files in `<output_dir>/tensorboard/<run_id>/`; a resumed run writes to the same
    folder and purges the events the interrupted run wrote after the resumed step."""

    name = "tensorboard"

    def start(self, ctx: TrainContext, resumed: bool) -> str:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        run_id = self.run_id or new_run_id()
        self.log_dir = ctx.output_dir / "tensorboard" / run_id
        purge = ctx.global_step + 1 if resumed else None
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge)
        if not resumed:
            for summary in hparams(flat_config(ctx), {}):
                self.writer.file_writer.add_summary(summary)
        return run_id

    def log_dict(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, status: str) -> None:
        self.writer.close()


@CALLBACKS.register("mlflow")
class MLflowTracker(Tracker):
    """A run in `tracking_uri` (default: `sqlite:///<output_dir>/mlflow.db`, artifacts next to
    it in `mlflow_artifacts/`), experiment `experiment_name`; metrics with their step, the config
    as params, `best/` as the artifact folder `best`."""

    name = "mlflow"
    STATUS = {"completed": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        super().check_config(cfg)
        if cfg.tracking_uri:
            check_tracking_uri(cfg.tracking_uri)

    def start(self, ctx: TrainContext, resumed: bool) -> str:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        cfg = ctx.cfg
        uri = cfg.tracking_uri or f"sqlite:///{(ctx.output_dir / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        if resumed:
            self.client.update_run(self.run_id, status="RUNNING")
            return self.run_id
        name = cfg.experiment_name or DEFAULT_EXPERIMENT
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            artifacts = None
            if not cfg.tracking_uri:
                artifacts = (ctx.output_dir / "mlflow_artifacts").resolve().as_uri()
            experiment_id = self.client.create_experiment(name, artifact_location=artifacts)
        run = self.client.create_run(experiment_id, run_name=cfg.run_name)
        params = [Param(k, str(v)) for k, v in flat_config(ctx).items()]
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def log_dict(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def upload_best(self, best: Path) -> None:
        self.client.log_artifacts(self.run_id, str(best), artifact_path="best")

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=self.STATUS[status])


@CALLBACKS.register("wandb")
class WandbTracker(Tracker):
    """A W&B run (project `experiment_name`, files under `<output_dir>/wandb/`), resumed by id;
    `tracking_mode: offline` keeps it local (`wandb sync` uploads it later)."""

    name = "wandb"

    def start(self, ctx: TrainContext, resumed: bool) -> str:
        import wandb

        cfg = ctx.cfg
        run_id = self.run_id or uuid.uuid4().hex[:12]
        self.run = wandb.init(
            project=cfg.experiment_name or DEFAULT_EXPERIMENT,
            name=cfg.run_name,
            dir=str(ctx.output_dir),
            id=run_id,
            resume="allow",
            mode=cfg.tracking_mode,
            config=None if resumed else flat_config(ctx),
            reinit="create_new",
        )
        return run_id

    def log_dict(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def upload_best(self, best: Path) -> None:
        import wandb

        artifact = wandb.Artifact(f"best-{self.run_id}", type="model")
        artifact.add_dir(str(best))
        self.run.log_artifact(artifact)

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "completed" else 1)


@CALLBACKS.register("comet")
class CometTracker(Tracker):
    """A Comet experiment (project `experiment_name`), resumed by its key; with
    `tracking_mode: offline` it is written to `<output_dir>/comet/` (upload later with
    `comet upload`)."""

    name = "comet"
    QUIET = dict(
        log_code=False,
        log_graph=False,
        auto_param_logging=False,
        auto_metric_logging=False,
        parse_args=False,
        auto_output_logging=None,
        log_env_details=False,
        log_git_metadata=False,
        log_git_patch=False,
        log_env_gpu=False,
        log_env_host=False,
        log_env_cpu=False,
        display_summary_level=0,
    )

    def start(self, ctx: TrainContext, resumed: bool) -> str:
        import comet_ml

        cfg = ctx.cfg
        project = cfg.experiment_name or DEFAULT_EXPERIMENT
        kwargs: dict[str, Any] = dict(project_name=project, **self.QUIET)
        if cfg.tracking_mode == "offline":
            directory = ctx.output_dir / "comet"
            directory.mkdir(parents=True, exist_ok=True)
            kwargs["offline_directory"] = str(directory)
            new, existing = comet_ml.OfflineExperiment, comet_ml.ExistingOfflineExperiment
        else:
            new, existing = comet_ml.Experiment, comet_ml.ExistingExperiment
        if resumed:
            self.experiment = existing(previous_experiment=self.run_id, **kwargs)
            return self.run_id
        key = uuid.uuid4().hex
        self.experiment = new(experiment_key=key, **kwargs)
        if cfg.run_name:
            self.experiment.set_name(cfg.run_name)
        self.experiment.log_parameters(flat_config(ctx))
        return key

    def log_dict(self, metrics: dict[str, float], step: int) -> None:
        self.experiment.log_metrics(metrics, step=step)

    def upload_best(self, best: Path) -> None:
        self.experiment.log_model("best", str(best))

    def finish(self, status: str) -> None:
        self.experiment.end()
