"""The forecast flags every command that forecasts shares (`scripts/predict.py`,
`scripts/evaluate.py`): sampling, batching, device and precision, each checked by the
forecasting rules before any work, a bad one named in one line."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from kronos_engine.cli.processes import rank_device
from kronos_engine.config.rules import resolve_device
from kronos_engine.errors import ForecastError
from kronos_engine.forecasting.options import SamplingOptions, check_count

DEFAULT_MAX_CONTEXT = 512  # the public KronosPredictor's
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
    group.add_argument("--max_context", type=int, help="bars the model sees (default: the "
                       "run's max_context, as its forecast validation used; else 512)")  # fmt: skip
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
    work: the sampling, the batch size and the `KronosPredictor` keywords. `max_context` is
    None until `for_run` (no `--max_context`: the run's decides)."""

    sampling: SamplingOptions
    batch_size: int
    max_context: int | None
    device: Any
    precision: str
    context_from_run: bool = False  # `max_context` is the run's (no --max_context)

    def for_run(self, config: dict[str, Any]) -> ForecastFlags:
        """`--max_context`, else the run's `max_context` (what its training windows and its
        forecast validation were checked against), else the public predictor's 512."""
        if self.max_context is not None:
            return self
        context = config.get("max_context", DEFAULT_MAX_CONTEXT)
        context = check_count(context, "max_context")
        return dataclasses.replace(self, max_context=context, context_from_run=True)

    @property
    def model(self) -> dict[str, Any]:
        """The `KronosPredictor` keywords (after `for_run`)."""
        assert self.max_context is not None, "ForecastFlags.for_run first"
        return dict(device=self.device, max_context=self.max_context, precision=self.precision)


def forecast_flags(args: argparse.Namespace) -> ForecastFlags:
    """`add_sampling_arguments`' flags, each refused in one line naming it when bad."""
    sampling = sampling_options(args)
    batch_size = check_count(args.batch_size, "--batch_size")
    max_context = None
    if args.max_context is not None:
        max_context = check_count(args.max_context, "--max_context")
    device = rank_device(resolve_device(args.device, "--device", ForecastError))
    return ForecastFlags(sampling, batch_size, max_context, device, args.precision)


def check_lookback(lookback: int, flags: ForecastFlags, source: str) -> None:
    """The model sees at most `max_context` bars: a longer lookback would be cut silently."""
    context = flags.max_context
    assert context is not None, "ForecastFlags.for_run first"
    if lookback > context:
        named = "the run's max_context" if flags.context_from_run else "--max_context"
        raise ForecastError(
            f"--lookback: {lookback}{source} exceeds {named} {context}; the model would see "
            f"only the last {context} bars. Lower --lookback to at most {context} or raise "
            f"--max_context to at least {lookback}"
        )
