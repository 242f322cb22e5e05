"""`SamplingOptions`: how a forecast samples its tokens, as one value from the command line
(or the public keyword arguments) down to the generator, and the one set of rules for the
forecast options every entry point takes (the API, `scripts/predict.py`, `scripts/evaluate.py`
and the forecast validation during training).

A rule names the argument as its caller spells it: `T` in Python, `--T` on the command line
(`prefix`), so that a bad value is one line saying which argument and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kronos_engine.errors import ForecastError
from kronos_engine.forecasting.forecast import quantile_column

SEED_LIMIT = 2**63  # seeds lie in [0, 2**63 - 1], as the training config's `seed`
# Each forecast bar is one predictor step over a window: beyond this no forecast is meant
# (and the id buffers alone would take gigabytes).
MAX_PRED_LEN = 100_000


@dataclass(frozen=True)
class SamplingOptions:
    """Temperature `T`, then top-k (if `top_k > 0`, `1` = greedy) or nucleus `top_p`, for
    `sample_count` sample paths per series; `seed` seeds the draws (None: the global stream).

    The defaults are the public `predict` defaults. Every field is checked here, once, for
    every forecaster (baselines included): a value the sampler would refuse, or silently read
    as another (`top_p=1.5` as no nucleus, `top_k=-3` as none), is refused when the options
    are made, before any work.
    """

    T: float = 1.0
    top_k: int = 0
    top_p: float = 0.9
    sample_count: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        check_sampling(self.T, self.top_k, self.top_p, self.sample_count, self.seed)

    @classmethod
    def named(cls, prefix: str, **fields: Any) -> SamplingOptions:
        """The options, with a bad value named `prefix + field` (`--T` for a flag)."""
        values = {f.name: f.default for f in dataclasses.fields(cls)}
        values.update(fields)
        check_sampling(**values, prefix=prefix)
        return cls(**values)

    def with_seed(self, seed: int | None) -> SamplingOptions:
        """These options with another seed; a derived seed (`seed + batch`) wraps at 2**63."""
        return dataclasses.replace(self, seed=None if seed is None else seed % SEED_LIMIT)

    def generator(self, device: torch.device) -> torch.Generator | None:
        """A generator on `device` seeded with `seed`, or None without a seed."""
        if self.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(int(self.seed))


def check_sampling(
    T: Any, top_k: Any, top_p: Any, sample_count: Any, seed: Any, *, prefix: str = ""
) -> None:
    """The rules of `SamplingOptions`: `T` finite and > 0; `top_p` in (0, 1]; `top_k` an
    integer >= 0; `sample_count` an integer >= 1; `seed` None or an integer in [0, 2**63)."""
    if not _is_real(T) or not math.isfinite(T) or T <= 0:
        raise ForecastError(f"{prefix}T: the temperature must be a finite number > 0, got {T!r}")
    if not _is_real(top_p) or not 0.0 < top_p <= 1.0:
        raise ForecastError(
            f"{prefix}top_p: must lie in (0, 1] (1 = no nucleus filtering), got {top_p!r}"
        )
    check_count(top_k, f"{prefix}top_k", minimum=0, note=" (0 = off, 1 = greedy)")
    check_count(sample_count, f"{prefix}sample_count")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < SEED_LIMIT):
        none = "" if prefix else " or None"
        raise ForecastError(
            f"{prefix}seed: must be an integer in [0, 2**63 - 1]{none}, got {seed!r}"
        )


def check_count(value: Any, name: str, minimum: int = 1, note: str = "") -> int:
    """`value` as an int if it is an integer >= `minimum` (`batch_size`, `sample_count` ...);
    else one line naming `name`. A float or bool is refused, never rounded."""
    if not _is_int(value) or value < minimum:
        raise ForecastError(f"{name}: must be an integer >= {minimum}{note}, got {value!r}")
    return int(value)


def check_pred_len(value: Any, name: str = "pred_len") -> int:
    """`value` as an int if it is an integer in [1, MAX_PRED_LEN]; else one line naming `name`
    and that range. A forecast may be longer than `max_context`: the window slides."""
    if not _is_int(value) or not 1 <= value <= MAX_PRED_LEN:
        raise ForecastError(f"{name}: must be an integer in [1, {MAX_PRED_LEN}], got {value!r}")
    return int(value)


def check_quantiles(
    quantiles: Sequence[Any] | None, sample_count: int, name: str = "quantiles"
) -> list[float]:
    """The quantiles asked for, as floats: each strictly between 0 and 1, each with its own
    output column (`close_q10`; 0.1 and 0.1000001 would print as one and overwrite each
    other), and at least two sample paths to take them over."""
    if isinstance(quantiles, (str, bytes)):
        raise ForecastError(f"{name}: expected a list of numbers, got {quantiles!r}")
    asked = [] if quantiles is None else list(quantiles)
    if not asked:
        return []
    qs = []
    for q in asked:
        if not _is_real(q) or not 0.0 < q < 1.0:
            raise ForecastError(f"{name}: each must lie strictly between 0 and 1, got {q!r}")
        qs.append(float(q))
    columns: dict[str, float] = {}
    for q in qs:
        column = quantile_column("close", q)
        if column in columns:
            what = f"{columns[column]!r} and {q!r} both give the column '{column}'"
            if columns[column] == q:
                what = f"{q!r} is given twice"
            raise ForecastError(
                f"{name}: {what}; give each quantile once (their percents must differ in "
                "the first 6 significant digits)"
            )
        columns[column] = q
    if sample_count < 2:
        raise ForecastError(f"{name}: quantiles need sample_count >= 2 sample paths")
    return qs


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
