"""Forecasting speed: KV-cached generation against the recompute-everything loop (the public
algorithm), in one run on one machine, with greedy outputs compared for identity.

    python scripts/benchmark_forecast.py                       # Kronos-small, the issue's cases
    python scripts/benchmark_forecast.py --device cuda --batch_size 64
    python scripts/benchmark_forecast.py --cases 400:100:1 --precision bf16

Each case is `context:pred_len:sample_count`; `max_context` is 512 (the public default), so
480 + 120 slides past it after 32 steps. Weights are random (the public shapes: tokenizer
`base`, predictor `--preset`); speed and exactness do not depend on training.

    python scripts/benchmark_forecast.py --processes --preset small --origins 64

`--processes`: `scripts/evaluate.py` and `scripts/predict.py` with `--nprocs 2` against one
process, end to end (start-up included), on a demo experiment trained for one step (tokenizer
`base`, predictor `--preset`) in a temporary folder; the outputs compared byte for byte, the
cost per forecast (one process, minus an `evaluate --no_model` run: start-up, data, baselines)
and what a CSI 300 daily test split (300 symbols x 250 origins) would cost at that rate. One
process is also timed with one thread (`OMP_NUM_THREADS=1`, what each worker gets), so the
gain of the processes is told apart from that of fewer threads per process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    p.add_argument("--processes", action="store_true", help="time --nprocs 2 against 1 instead")
    p.add_argument("--symbols", type=int, default=8, help="demo symbols (--processes)")
    p.add_argument("--origins", type=int, default=64, help="origins evaluated (--processes)")
    p.add_argument("--lookback", type=int, default=64, help="history bars (--processes)")
    p.add_argument("--pred_len", type=int, default=8, help="bars forecast (--processes)")
    p.add_argument("--sample_count", type=int, default=1, help="sample paths (--processes)")
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


SCRIPTS = Path(__file__).resolve().parent
CSI300_ORIGINS = 300 * 250


def timed_command(script: str, *args: str, cwd: Path, threads: int | None = None) -> float:
    """Wall seconds of one command (`threads`: its OMP_NUM_THREADS; `--nprocs` workers get 1)."""
    env = dict(os.environ, **({} if threads is None else {"OMP_NUM_THREADS": str(threads)}))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args], cwd=cwd, capture_output=True, text=True,
        env=env,
    )  # fmt: skip
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{script} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return took


def same_files(a: Path, b: Path) -> bool:
    """Every file of `a` (a file, or a folder's files) byte-identical in `b`."""
    if a.is_file():
        return a.read_bytes() == b.read_bytes()
    names = sorted(p.name for p in a.iterdir() if p.is_file())
    return names == sorted(p.name for p in b.iterdir() if p.is_file()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names
    )


def compare_processes(args: argparse.Namespace) -> int:
    """predict and evaluate, `--nprocs 2` against one process; one JSON line per command."""
    root = Path(tempfile.mkdtemp(prefix="kronos_bench_procs_"))
    try:
        tokenizer = "tiny" if args.preset == "tiny" else "base"
        (root / "run.yaml").write_text(
            "data_source: demo\n"
            f"demo_symbols: {args.symbols}\ndemo_length: 400\n"
            f"lookback_window: {args.lookback}\npredict_window: {args.pred_len}\n"
            "batch_size: 8\nepochs: 1\nmax_steps: 1\nprogress_bar: false\n"
            f"tokenizer:\n  model_preset: {tokenizer}\n"
            f"predictor:\n  model_preset: {args.preset}\n",
            encoding="utf-8",
        )
        timed_command("pipeline.py", "--config=run.yaml", "--exp_dir=exp", cwd=root)
        sampling = [f"--sample_count={args.sample_count}", "--seed=0", "--device=cpu"]
        batch = [f"--batch_size={args.batch_size}"]
        eval_args = ["--exp_dir=exp", f"--max_origins={args.origins}", "--no_plots"]
        eval_args += ["--no_progress", *sampling, *batch]
        base = timed_command("evaluate.py", *eval_args, "--no_model", "--output=e0", cwd=root)
        one = timed_command("evaluate.py", *eval_args, "--output=e1", cwd=root)
        one_1t = timed_command("evaluate.py", *eval_args, "--output=e3", cwd=root, threads=1)
        two = timed_command("evaluate.py", *eval_args, "--output=e2", "--nprocs=2", cwd=root)
        origins = json.loads((root / "e1" / "metrics.json").read_text())["naive"]["origins"]
        per_origin = (one - base) / origins
        per_origin_2 = (two - base) / origins  # the launcher's start-up counted as work
        print(json.dumps({
            "command": "evaluate", "preset": args.preset, "origins": int(origins),
            "lookback": args.lookback, "pred_len": args.pred_len,
            "sample_count": args.sample_count, "batch_size": args.batch_size,
            "no_model_s": round(base, 2), "nprocs1_s": round(one, 2),
            "nprocs1_1thread_s": round(one_1t, 2), "nprocs2_s": round(two, 2),
            "speedup": round(one / two, 2), "speedup_vs_1thread": round(one_1t / two, 2),
            "identical": same_files(root / "e1", root / "e2"),
            "identical_1thread": same_files(root / "e1", root / "e3"),
            "ms_per_origin_1": round(1000 * per_origin, 1),
            "ms_per_origin_2": round(1000 * per_origin_2, 1),
            "csi300_min_1": round(CSI300_ORIGINS * per_origin / 60, 1),
            "csi300_min_2": round(CSI300_ORIGINS * per_origin_2 / 60, 1),
        }), flush=True)  # fmt: skip
        pred_args = ["--exp_dir=exp", *sampling, "--batch_size=1"]
        one = timed_command("predict.py", *pred_args, "--output=p1.csv", cwd=root)
        one_1t = timed_command("predict.py", *pred_args, "--output=p3.csv", cwd=root, threads=1)
        two = timed_command("predict.py", *pred_args, "--output=p2.csv", "--nprocs=2", cwd=root)
        print(json.dumps({
            "command": "predict", "preset": args.preset, "symbols": args.symbols,
            "nprocs1_s": round(one, 2), "nprocs1_1thread_s": round(one_1t, 2),
            "nprocs2_s": round(two, 2), "speedup": round(one / two, 2),
            "speedup_vs_1thread": round(one_1t / two, 2),
            "identical": same_files(root / "p1.csv", root / "p2.csv"),
        }), flush=True)  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)  # the folder this benchmark made
    return 0


def main(argv=None) -> int:
    from kronos_engine.models import build_predictor, build_tokenizer

    args = parse_args(argv)
    if args.processes:
        return compare_processes(args)
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
