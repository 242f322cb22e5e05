"""What a finished run tells its user: the exit code of a stop, where everything is, and the
command that continues the experiment."""

from __future__ import annotations

import signal

from kronos_engine.layout import RunLayout
from kronos_engine.training.model_factory import BUILT_IN_STRATEGIES
from kronos_engine.training.validation import selection_metric


def stop_exit_code(ctx) -> int:
    """0 for a finished run; 128 + signal number when a signal stopped it (like a shell)."""
    if not ctx.preempted:
        return 0
    return 128 + int(ctx.stop_signal)


def describe_results(ctx, suggest_next: bool = True) -> str:
    """What the user reads at the end: where everything is and what to run next."""
    cfg, out, run = ctx.cfg, ctx.output_dir, RunLayout(ctx.output_dir)
    if ctx.preempted:
        status = f"stopped by {signal.Signals(ctx.stop_signal).name} at step {ctx.global_step}"
    else:
        reason = f", {ctx.stop_reason}" if ctx.stop_reason else ""
        status = f"finished at step {ctx.global_step} (epoch {ctx.epoch}{reason})"
    lines = [f"{cfg.train_type} training {status}", f"results in {out}/"]
    lines.append(f"  best model   {best_model_line(ctx)}")
    lines += [
        f"  metrics      {run.metrics}",
        f"  summary      {run.summary}",
        f"  checkpoints  {run.checkpoints}",
        f"  config       {run.config}",
    ]
    if ctx.preempted:
        lines.append(f"resume with: python scripts/train.py --config {run.config} --resume={out}")
    elif suggest_next and cfg.train_type == "tokenizer" and run.best.is_dir():
        lines.append(f"next: {next_predictor_command(ctx)}")
    lines.append(f"plot: python scripts/plot.py {out}")
    return "\n".join(lines)


def best_model_line(ctx) -> str:
    """Where best/ is and what chose it, or why there is none: no validation ran, or it ran
    and never gave a defined, finite value of the selection metric."""
    run = RunLayout(ctx.output_dir)
    metric, _ = selection_metric(ctx)
    if run.best.is_dir() and ctx.best_metric is not None:
        return f"{run.best}  ({metric} {ctx.best_metric:.6g} at step {ctx.best_step})"
    if run.best.is_dir():
        return str(run.best)
    if ctx.last_val_step is None:
        return "none (no validation ran)"
    return f"none (validation ran, but never gave a defined, finite {metric})"


def next_predictor_command(ctx) -> str:
    """The predictor run that goes with a finished tokenizer run: the same config (data,
    windows, exp_dir) as written to its config.yaml, this tokenizer's best/ as the explicit
    `tokenizer_path` (first in `config.predictor_tokenizer`'s rule, so a `tokenizer_path` or
    `pretrained_tokenizer` in that config.yaml cannot win over it), a predictor preset with its
    token bits, and none of the tokenizer-only settings."""
    from kronos_engine.models.presets import PREDICTOR_PRESETS

    cfg, out, run = ctx.cfg, ctx.output_dir, RunLayout(ctx.output_dir)
    model = getattr(ctx.model, "module", ctx.model)
    bits = (getattr(model, "s1_bits", None), getattr(model, "s2_bits", None))
    flags = [
        "--train_type=predictor",
        f"--config {run.config}",
        f"--tokenizer_path={run.best}",
        f"--output_dir={out.parent / 'predictor'}",
    ]
    if not cfg.pretrained_predictor:  # model_preset in config.yaml names the tokenizer's preset
        matching = [
            name
            for name, conf in PREDICTOR_PRESETS.items()
            if (conf.get("s1_bits"), conf.get("s2_bits")) == bits
        ]
        if matching:
            flags.append(f"--model_preset={'small' if 'small' in matching else matching[0]}")
    if cfg.strategy:  # the tokenizer's, in config.yaml: name the predictor's default instead
        flags.append(f"--strategy={BUILT_IN_STRATEGIES['predictor']}")
    if cfg.overwrite:
        flags.append("--overwrite=false")
    return "python scripts/train.py " + " ".join(flags)
