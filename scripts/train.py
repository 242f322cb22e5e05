"""Train the Kronos tokenizer or predictor.

    python scripts/train.py --train_type=tokenizer [--config FILE.yaml] [--key=value ...]
    python scripts/train.py --nprocs=N ...   # N local DDP processes (torch's elastic launcher)
    torchrun --standalone --nproc_per_node=N scripts/train.py --train_type=predictor ...

All logic lives in `kronos_engine.cli` so it is importable and tested; see `--help`.
"""

from kronos_engine.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
