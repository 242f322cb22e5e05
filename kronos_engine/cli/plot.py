"""`scripts/plot.py`: training/validation loss, loss parts and learning rate of one or several
runs from their `metrics.jsonl` (`kronos_engine.plotting`), as one PNG."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from kronos_engine.cli.shell import exit_code_for, setup_logging
from kronos_engine.plotting import plot_runs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plot.py",
        description="Plot training/validation loss, loss parts and learning rate from "
        "metrics.jsonl. Several output dirs are drawn on one figure to compare runs.",
    )
    parser.add_argument("output_dirs", nargs="+", metavar="OUTPUT_DIR", help="a run's output dir")
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT.png",
        help="image file, .png/.pdf/.svg/.jpg ... (default: OUTPUT_DIR/loss.png for one run, "
        "./runs.png for several)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()  # the one warning about skipped bad records
    try:
        args = build_parser().parse_args(argv)
        out = plot_runs(args.output_dirs, args.output)
    except (SystemExit, KeyboardInterrupt, Exception) as exc:
        return exit_code_for(exc)  # a PlotError: one line, exit 2
    print(f"plot written to {out}")
    return 0
