"""Forecasting speed: KV-cached generation against the recompute-everything loop (the public
algorithm), in one run on one machine, with greedy outputs compared for identity.

    python scripts/benchmark_forecast.py                       # Kronos-small, the issue's cases
    python scripts/benchmark_forecast.py --device cuda --batch_size 64
    python scripts/benchmark_forecast.py --cases 400:100:1 --precision bf16

Each case is `context:pred_len:sample_count`; `max_context` is 512 (the public default), so
480 + 120 slides past it after 32 steps. Weights are random (the public shapes: tokenizer
`base`, predictor `--preset`); speed and exactness do not depend on training.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from kronos_engine.cli.helpformat import DefaultsHelpFormatter

DEFAULT_CASES = ["400:100:1", "400:100:5", "480:120:1"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter
    )
    p.add_argument("--preset", default="small", help="predictor preset (mini, small, base)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_context", type=int, default=512)
    p.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="context:pred_len:samples")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--skip_baseline", action="store_true", help="time only the cached path")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def timed(fn, device: torch.device) -> tuple[torch.Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def run_case(tok, pred, case: str, args: argparse.Namespace) -> dict:
    from kronos_engine.forecasting import generate
    from kronos_engine.forecasting.generation import eval_mode

    context, pred_len, samples = (int(v) for v in case.split(":"))
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, context, 6, generator=g)
    limits = torch.tensor([60, 24, 7, 32, 13])
    stamps = (torch.rand(args.batch_size, context + pred_len, 5, generator=g) * limits).floor()

    def forecast(use_cache: bool, precision: str) -> torch.Tensor:
        return generate(
            tok, pred, list(x), list(stamps), pred_len, args.max_context, top_k=1,
            sample_count=samples, use_cache=use_cache, precision=precision,
        )  # fmt: skip

    with eval_mode(tok, pred):
        forecast(True, args.precision)  # warm-up (allocator, kernels)
        cached, t_cached = timed(lambda: forecast(True, args.precision), device)
        row = {
            "case": case,
            "batch": args.batch_size,
            "rows": args.batch_size * samples,
            "slides_after_step": max(0, args.max_context - context),
            "precision": args.precision,
            "cached_s": round(t_cached, 3),
            "cached_tokens_per_s": round(args.batch_size * samples * pred_len / t_cached, 1),
        }
        if args.precision == "bf16":  # the forecast's change against fp32, same cached path
            fp32, t_fp32 = timed(lambda: forecast(True, "fp32"), device)
            scale = fp32.abs().amax(dim=(0, 1, 2), keepdim=True)
            row.update(
                fp32_cached_s=round(t_fp32, 3),
                bf16_speedup=round(t_fp32 / t_cached, 2),
                bf16_identical_to_fp32=bool(torch.equal(cached, fp32)),
                bf16_max_rel_diff=float(((cached - fp32).abs() / scale).max()),
                bf16_mean_rel_diff=float(((cached - fp32).abs() / scale).mean()),
            )
        if not args.skip_baseline:
            full, t_full = timed(lambda: forecast(False, args.precision), device)
            row.update(
                recompute_s=round(t_full, 3),
                speedup=round(t_full / t_cached, 2),
                identical_greedy_output=bool(torch.equal(cached, full)),
                max_abs_diff=float((cached - full).abs().max()),
            )
    return row


def main(argv=None) -> int:
    from kronos_engine.models import build_predictor, build_tokenizer

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = build_tokenizer("base").to(args.device)
    pred = build_predictor(args.preset).to(args.device)
    print(f"# predictor {args.preset}, tokenizer base, device {args.device}, "
          f"threads {torch.get_num_threads()}, max_context {args.max_context}", flush=True)  # fmt: skip
    for case in args.cases:
        print(json.dumps(run_case(tok, pred, case, args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
