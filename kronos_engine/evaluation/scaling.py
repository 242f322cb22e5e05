"""Test-time scaling (the Kronos paper's): how the IC, RankIC and CRPS of each sampled model
change as the sample paths per forecast grow (`evaluate.py --scaling 1,5,10,20
--scaling_seeds 3`, `scaling.json`, `scaling.png`).

Each (sample count, seed) pair is one more rolling evaluation of the same origins, scored by
`MetricAccumulator` like the main one (the point forecast is the mean path, so more paths
average more draws). The baselines are left out: their paths are deterministic, so no count
changes them. CRPS needs two or more paths, so a count of 1 has none. Seeds: run `i` has the
base seed ``--seed + i * batches`` (`batches` = the evaluation's batch count): a model samples
each origin from the stream of (its symbol, its origin, that seed), and a forecaster that
samples per batch (seed + b) shares no batch seed with another run either; run 0 is the main
evaluation's sampling, and every count is run with the same seeds. Mean and std (ddof 1; none
with one seed) over the seeds. Under `--nprocs` each run is sharded like the main one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kronos_engine.errors import EvaluationError

log = logging.getLogger("kronos_engine")

SCALING_FILE = "scaling.json"
SCALING_PLOT = "scaling.png"
METRICS = ("ic", "rank_ic", "crps")
LABELS = {"ic": "IC", "rank_ic": "RankIC", "crps": "CRPS"}
DEFAULT_SEEDS = 3


@dataclass(frozen=True)
class ScalingPlan:
    """The sample counts to try (ascending) and how many seeds each gets."""

    sample_counts: tuple[int, ...]
    seeds: int = DEFAULT_SEEDS


def parse_scaling(text: str | None, seeds: int | None) -> ScalingPlan | None:
    """`--scaling` (comma-separated distinct positive counts) and `--scaling_seeds` as a plan,
    or None without `--scaling`; a bad value is one `EvaluationError` line naming its flag."""
    if text is None:
        if seeds is not None:
            raise EvaluationError("--scaling_seeds: only with --scaling (e.g. --scaling 1,5,10,20)")
        return None
    items = [item.strip() for item in text.split(",")]
    if not all(item.isdigit() and int(item) >= 1 for item in items):
        raise EvaluationError(
            f"--scaling: '{text}' is not a comma-separated list of positive sample counts "
            "(e.g. 1,5,10,20)"
        )
    counts = [int(item) for item in items]
    twice = sorted({c for c in counts if counts.count(c) > 1})
    if twice:
        raise EvaluationError(f"--scaling: {twice} listed more than once; give each count once")
    if seeds is None:
        seeds = DEFAULT_SEEDS
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise EvaluationError(f"--scaling_seeds: must be a positive integer, got {seeds!r}")
    return ScalingPlan(tuple(sorted(counts)), seeds)


def run_seeds(sampling: Any, runs: int, batches: int) -> list[int]:
    """The base seed of each run: ``seed + i * batches`` (wrapped as every derived seed is,
    `SamplingOptions.with_seed`), so runs share no batch seed."""
    step = max(int(batches), 1)
    return [sampling.with_seed(sampling.seed + i * step).seed for i in range(runs)]


def run_scaling(
    store: Any,
    origins: Any,
    forecasters: Mapping[str, Any],
    opts: Any,
    plan: ScalingPlan,
    progress: bool = True,
    shard: Any = None,
) -> dict[str, Any]:
    """Forecast `origins` with each sampled model of `forecasters` at every sample count of
    `plan` and each of its seeds; the `scaling.json` section (each run and the mean and std
    over seeds per count). Under `shard` (`forecasting.shards.Shard`) every rank calls this
    and forecasts its share of each run; rank 0 gets the section, the others `{}`."""
    from kronos_engine.evaluation.rolling import ForecastOptions, run_rolling

    forecasters = sampled_models(forecasters)
    if opts.sampling.seed is None:
        raise ValueError("test-time scaling needs a sampling seed (reproducible runs)")
    seeds = run_seeds(opts.sampling, plan.seeds, math.ceil(len(origins) / opts.batch_size))
    runs: list[dict[str, Any]] = []
    for count in plan.sample_counts:
        for seed in seeds:
            sampling = dataclasses.replace(opts.sampling, sample_count=count, seed=seed)
            run_opts = ForecastOptions(opts.pred_len, opts.lookback, sampling, opts.batch_size)
            acc = run_rolling(store, origins, forecasters, run_opts, None, progress, shard)
            if shard is not None and not shard.is_main:
                continue
            overall = acc.overall()
            for model, values in overall.items():
                record = {k: values.get(k, math.nan) for k in METRICS}
                runs.append({"model": model, "sample_count": count, "seed": seed, **record})
                log.info(
                    "scaling: %s, %d path(s), seed %d: IC %.4g, RankIC %.4g, CRPS %.4g",
                    model, count, seed, record["ic"], record["rank_ic"], record["crps"],
                )  # fmt: skip
    if shard is not None and not shard.is_main:
        return {}
    return {
        "sample_counts": list(plan.sample_counts),
        "seeds": seeds,
        "std": "over seeds, ddof 1 (none with one seed)",
        "crps": "only with 2 or more sample paths",
        "summary": summarise(runs),
        "runs": runs,
    }


def sampled_models(forecasters: Mapping[str, Any]) -> dict[str, Any]:
    """The forecasters whose paths change with the sample count (not a deterministic baseline)."""
    return {n: f for n, f in forecasters.items() if not getattr(f, "deterministic", False)}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, sample count): mean and std over its seeds of each metric."""
    rows: list[dict[str, Any]] = []
    keys = list(dict.fromkeys((r["model"], r["sample_count"]) for r in runs))
    for model, count in keys:
        mine = [r for r in runs if r["model"] == model and r["sample_count"] == count]
        row: dict[str, Any] = {"model": model, "sample_count": count, "seeds": len(mine)}
        for metric in METRICS:
            values = np.array([r[metric] for r in mine], dtype=np.float64)
            values = values[np.isfinite(values)]
            row[f"{metric}_mean"] = float(values.mean()) if values.size else math.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
        rows.append(row)
    return rows


def scaling_markdown(section: dict[str, Any]) -> list[str]:
    """The report's test-time scaling table: mean ± std over seeds per (model, count)."""
    lines = [
        "## Test-time scaling",
        "",
        f"Each sample count with {len(section['seeds'])} seed(s) ({section['seeds']}); mean ± "
        "std over the seeds (ddof 1). CRPS needs 2 or more sample paths; the baselines are "
        "deterministic and left out. Every run: `scaling.json`.",
        "",
        "| model | sample_count | IC | RankIC | CRPS |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in section["summary"]:
        cells = [_mean_std(row[f"{m}_mean"], row[f"{m}_std"]) for m in METRICS]
        lines.append(f"| {row['model']} | {row['sample_count']} | " + " | ".join(cells) + " |")
    return lines + [""]


def _mean_std(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.4g} ± {std:.2g}" if math.isfinite(std) else f"{mean:.4g}"
