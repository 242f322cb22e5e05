"""The validation pass: exact global per-sample means from sums and counts across ranks."""

from __future__ import annotations

import torch

from kronos_engine.context import TrainContext
from kronos_engine.errors import EmptyValidationError


@torch.no_grad()
def evaluate(ctx: TrainContext) -> dict[str, float]:
    """Run the strategy's `validation_step` over `ctx.val_loader` on every rank and reduce.

    Ranks may hold different numbers of samples (no padded duplicates); the sums and counts are
    all-reduced so the result is the mean over exactly the validation set. Training RNG streams
    are left untouched so validation never changes what training does next.
    """
    model = ctx.eval_model if ctx.eval_model is not None else ctx.model
    strategy, executor = ctx.strategy, ctx.executor
    devices = [executor.device] if executor.device.type == "cuda" else []
    was_training = model.training
    with torch.random.fork_rng(devices=devices):
        model.eval()
        metric_sum = torch.zeros((), dtype=torch.float64, device=executor.device)
        part_sums: dict[str, torch.Tensor] = {}
        count = 0
        for batch in ctx.val_loader:
            batch = executor.to_device(batch)
            with executor.autocast():
                out = strategy.validation_step(model, batch, ctx)
            metric_sum += out.metric_sum.detach().to(torch.float64)
            for name, value in out.part_sums.items():
                prev = part_sums.get(name, torch.zeros_like(metric_sum))
                part_sums[name] = prev + value.detach().to(torch.float64)
            count += out.count
        model.train(was_training)
    names = sorted(part_sums)
    vector = torch.stack([metric_sum, *[part_sums[n] for n in names]])
    counts = torch.tensor([float(count)], dtype=torch.float64, device=executor.device)
    reduced = executor.all_reduce_sum(torch.cat([vector, counts]))
    total = int(reduced[-1].item())
    if total == 0:
        raise EmptyValidationError(
            "validation set is empty on every rank; widen val_time_range/split_ratios"
        )
    metrics = {strategy.metric_name: reduced[0].item() / total, "val_samples": float(total)}
    for i, name in enumerate(names, start=1):
        metrics[name] = reduced[i].item() / total
    return metrics


def selection_metric(ctx: TrainContext) -> tuple[str, str]:
    """The validation metric that picks `best/` and drives early stopping, and its mode
    (`min`: lower is better, `max`: higher): `best_metric`, else the strategy's metric."""
    return ctx.cfg.best_metric or ctx.strategy.metric_name, ctx.cfg.best_mode


def improves(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether `value` beats `best` by more than `min_delta` in `mode`; ties never do."""
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta
