"""The forecast flags every command that forecasts shares (`scripts/predict.py`,
`scripts/evaluate.py`): sampling, batching, device and precision, each checked by the
forecasting rules before any work, a bad one named in one line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from kronos_engine.cli.processes import rank_device
from kronos_engine.config.rules import resolve_device
from kronos_engine.errors import ForecastError
from kronos_engine.forecasting.options import SamplingOptions, check_count

NPROCS_HELP = (
    "forecast in N local processes (one GPU each with --device cuda, else the CPU) through "
    "torch's elastic launcher, as `torchrun --standalone --nproc_per_node=N`; the batches are "
    "shared out, rank 0 writes the same files as one process (default: 1, this process)"
)


def add_sampling_arguments(group: Any, *, batch_size: int, batch_help: str) -> None:
    """The sampling, batching and device flags of every command that forecasts."""
    group.add_argument("--sample_count", type=int, default=1, help="sample paths per forecast")
    group.add_argument("--T", type=float, default=1.0, help="sampling temperature")
    group.add_argument("--top_k", type=int, default=0, help="top-k sampling (1 = greedy)")
    group.add_argument("--top_p", type=float, default=0.9, help="nucleus sampling threshold")
    group.add_argument("--seed", type=int, default=0, help="seed of the sampling")
    group.add_argument("--batch_size", type=int, default=batch_size, help=batch_help)
    group.add_argument("--max_context", type=int, default=512, help="model context in tokens")
    group.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    group.add_argument("--nprocs", metavar="N", help=NPROCS_HELP)  # taken out by pop_nprocs
    group.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                       help="bf16: the predictor under bf16 autocast")  # fmt: skip


def sampling_options(args: argparse.Namespace) -> SamplingOptions:
    """The sampling flags of `add_sampling_arguments` as one value (a bad one names its flag)."""
    return SamplingOptions.named(
        "--", T=args.T, top_k=args.top_k, top_p=args.top_p, sample_count=args.sample_count,
        seed=args.seed,
    )  # fmt: skip


@dataclass(frozen=True)
class ForecastFlags:
    """The flags of `add_sampling_arguments`, checked by the forecasting rules before any
    work: the sampling, the batch size and the `KronosPredictor` keywords."""

    sampling: SamplingOptions
    batch_size: int
    max_context: int
    model: dict[str, Any]  # device, max_context, precision


def forecast_flags(args: argparse.Namespace) -> ForecastFlags:
    """`add_sampling_arguments`' flags, each refused in one line naming it when bad."""
    sampling = sampling_options(args)
    batch_size = check_count(args.batch_size, "--batch_size")
    max_context = check_count(args.max_context, "--max_context")
    device = rank_device(resolve_device(args.device, "--device", ForecastError))
    model = dict(device=device, max_context=max_context, precision=args.precision)
    return ForecastFlags(sampling, batch_size, max_context, model)


def check_lookback(lookback: int, max_context: int, source: str) -> None:
    """The model sees at most `max_context` bars: a longer lookback would be cut silently."""
    if lookback > max_context:
        raise ForecastError(
            f"--lookback: {lookback}{source} exceeds --max_context {max_context}; the model "
            f"would see only the last {max_context} bars. Lower --lookback to at most "
            f"{max_context} or raise --max_context to at least {lookback}"
        )
