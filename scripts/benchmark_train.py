"""Predictor training-step throughput and peak memory: fp32 vs bf16, with/without activation
checkpointing (`--suite precision`), full fine-tuning vs LoRA (`--suite lora`), eager vs
torch.compile (`--suite compile`). Each configuration runs in its own process so peak-memory
readings are clean (CUDA: max allocated; CPU: the process's peak RSS less its RSS after
imports).

    python scripts/benchmark_train.py --preset small --seq_len 128 --batch_size 8
    python scripts/benchmark_train.py --preset base --seq_len 512 --batch_size 4 --device cuda
    python scripts/benchmark_train.py --suite lora --preset base --steps 3
    python scripts/benchmark_train.py --suite compile --preset small --steps 5 --warmup 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from kronos_engine.cli.helpformat import DefaultsHelpFormatter


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    moments = sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values()
        for t in state.values()
        if torch.is_tensor(t) and t.dim() > 0
    )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return moments + sum(p.numel() * p.element_size() for p in params)  # one gradient each


def one_config(args: argparse.Namespace) -> dict:
    from kronos_engine.models import build_predictor

    try:  # imported by every configuration, so that CPU memory compares training alone
        import peft  # noqa: F401
    except ImportError:
        pass
    rss_before = _current_rss_mb()
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_predictor(args.preset)
    if args.finetune != "full":
        from kronos_engine.config import TrainConfig
        from kronos_engine.training.finetune import apply_finetune_method

        cfg = TrainConfig(
            train_type="predictor",
            finetune_method=args.finetune,
            lora_r=args.lora_r,
            lora_dropout=args.lora_dropout,
        )
        model = apply_finetune_method(model, cfg)
    model = model.to(device).train()
    if args.ckpt:
        model.set_activation_checkpointing(True)
    if args.compile:
        model.compile()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
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
        # Peak RSS over the run less the RSS after imports: model, optimizer and activations.
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before
    elapsed = time.perf_counter() - t0
    return {
        "precision": args.precision,
        "activation_checkpointing": args.ckpt,
        "finetune": args.finetune,
        "compile": args.compile,
        "trainable_params": sum(p.numel() for p in trainable),
        "total_params": sum(p.numel() for p in model.parameters()),
        "step_s": round(elapsed / args.steps, 4),
        # gradients + AdamW moments: exact, whatever the allocator does
        "grad_optim_mb": round(_state_bytes(optimizer) / 2**20, 1),
        "samples_per_s": round(args.steps * args.batch_size / elapsed, 2),
        "tokens_per_s": round(args.steps * args.batch_size * args.seq_len / elapsed, 1),
        "peak_mem_mb": round(peak_mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument("--preset", default="small", choices=["tiny", "mini", "small", "base"])
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None)
    parser.add_argument("--ckpt", action="store_true")
    parser.add_argument("--finetune", choices=["full", "lora"], default="full")
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--lora_dropout", type=float, default=0.05)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--suite", choices=["precision", "lora", "compile"], default="precision")
    args = parser.parse_args()
    if args.precision is not None:  # child process: one configuration
        print(json.dumps(one_config(args)))
        return
    base = [sys.executable, __file__, "--preset", args.preset, "--seq_len", str(args.seq_len)]
    base += ["--batch_size", str(args.batch_size), "--steps", str(args.steps)]
    base += ["--warmup", str(args.warmup), "--device", args.device]
    base += ["--lora_r", str(args.lora_r), "--lora_dropout", str(args.lora_dropout)]
    print(f"preset={args.preset} seq_len={args.seq_len} batch={args.batch_size} {args.device}")
    suites = {
        "precision": [[p] + c for p in (["--precision", "fp32"], ["--precision", "bf16"])
                      for c in ([], ["--ckpt"])],
        "lora": [["--precision", "fp32", "--finetune", f] for f in ("full", "lora")],
        "compile": [["--precision", "fp32"], ["--precision", "fp32", "--compile"]],
    }  # fmt: skip
    results = []
    for extra in suites[args.suite]:
        out = subprocess.run(base + extra, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(results[-1])
    if args.suite != "precision":
        first, second = results
        print(
            f"{args.suite} vs baseline: step {second['step_s']:.3g}s vs {first['step_s']:.3g}s "
            f"(speed-up {first['step_s'] / second['step_s']:.2f}x), peak memory "
            f"{second['peak_mem_mb']:.0f} vs {first['peak_mem_mb']:.0f} MB, gradients + AdamW "
            f"{second['grad_optim_mb']:.0f} vs {first['grad_optim_mb']:.0f} MB, trainable "
            f"{second['trainable_params']:,} vs {first['trainable_params']:,}"
        )


if __name__ == "__main__":
    main()
