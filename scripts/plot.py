"""Plot loss, loss parts and learning rate of one or more runs from their `metrics.jsonl`.

    python scripts/plot.py OUTPUT_DIR [OUTPUT_DIR ...] [-o out.png]

Needs matplotlib (`pip install 'kronos-engine[plot]'`).
"""

from kronos_engine.cli.plot import main

if __name__ == "__main__":
    raise SystemExit(main())
