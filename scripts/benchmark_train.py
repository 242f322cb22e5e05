"""Predictor training-step throughput and peak memory: fp32 vs bf16, with/without activation
checkpointing. Each configuration runs in its own process so peak-memory readings are clean.

    python scripts/benchmark_train.py --preset small --seq_len 128 --batch_size 8
    python scripts/benchmark_train.py --preset base --seq_len 512 --batch_size 4 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def one_config(args: argparse.Namespace) -> dict:
    from kronos_engine.models import build_predictor

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_predictor(args.preset).to(device).train()
    if args.ckpt:
        model.set_activation_checkpointing(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    vocab = 2**model.s1_bits
    shape = (args.batch_size, args.seq_len)
    s1 = torch.randint(0, vocab, shape, device=device)
    s2 = torch.randint(0, vocab, shape, device=device)
    stamp = torch.stack(
        [torch.randint(0, n, shape, device=device) for n in (60, 24, 7, 32, 13)], dim=-1
    ).float()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def step() -> None:
        with autocast:
            l1, l2 = model(s1, s2, stamp, use_teacher_forcing=True, s1_targets=s1)
        loss, _, _ = model.head.compute_loss(l1.float(), l2.float(), s1, s2)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    elapsed = time.perf_counter() - t0
    return {
        "precision": args.precision,
        "activation_checkpointing": args.ckpt,
        "samples_per_s": round(args.steps * args.batch_size / elapsed, 2),
        "tokens_per_s": round(args.steps * args.batch_size * args.seq_len / elapsed, 1),
        "peak_mem_mb": round(peak_mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=["tiny", "mini", "small", "base"])
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None)
    parser.add_argument("--ckpt", action="store_true")
    args = parser.parse_args()
    if args.precision is not None:  # child process: one configuration
        print(json.dumps(one_config(args)))
        return
    base = [sys.executable, __file__, "--preset", args.preset, "--seq_len", str(args.seq_len)]
    base += ["--batch_size", str(args.batch_size), "--steps", str(args.steps)]
    base += ["--warmup", str(args.warmup), "--device", args.device]
    print(f"preset={args.preset} seq_len={args.seq_len} batch={args.batch_size} {args.device}")
    for precision in ("fp32", "bf16"):
        for ckpt in (False, True):
            cmd = base + ["--precision", precision] + (["--ckpt"] if ckpt else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            print(json.loads(out.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
