"""`scripts/plot.py`: what is drawn, several runs on one figure, and its errors.

The end-to-end plot of a real run is in `test_cli.py`; here runs are small `metrics.jsonl`
files in the format `callbacks/metrics_jsonl.py` writes, so each case is exact and fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kronos_engine.errors import PlotError
from kronos_engine.plotting import load_run

REPO = Path(__file__).resolve().parents[1]
PLOT = REPO / "scripts" / "plot.py"


def write_run(out: Path, metric: str = "val_loss", steps: int = 5, lr0: float = 1e-4) -> Path:
    """A predictor-like run: train records with parts, two validations, a summary."""
    out.mkdir(parents=True)
    lines = []
    for step in range(1, steps + 1):
        lines.append(
            {
                "type": "train",
                "step": step,
                "epoch": 0,
                "loss": 3.0 - 0.1 * step,
                "s1_loss": 3.1 - 0.1 * step,
                "s2_loss": 2.9 - 0.1 * step,
                "lr": lr0 / step,
                "grad_norm": 1.0,
                "samples_per_s": 100.0,
                "samples": 16 * step,
            }
        )
        if step in (2, steps):
            lines.append(
                {
                    "type": "val",
                    "step": step,
                    "epoch": 0,
                    metric: 3.2 - 0.1 * step,
                    "val_samples": 50.0,
                    "val_s1_loss": 3.3 - 0.1 * step,
                    "val_s2_loss": 3.1 - 0.1 * step,
                    "best": 3.2 - 0.1 * step,
                }
            )
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"type": "train", "st'  # cut line
    (out / "metrics.jsonl").write_text(text)
    (out / "summary.json").write_text(json.dumps({"metric_name": metric}))
    return out


def test_load_run_separates_losses_from_bookkeeping(tmp_path):
    run = load_run(write_run(tmp_path / "a"))
    assert run.metric_name == "val_loss"
    assert run.train_parts == ["s1_loss", "s2_loss"]
    assert run.val_parts == ["val_s1_loss", "val_s2_loss"]
    assert [s for s, _ in run.train["loss"]] == [1, 2, 3, 4, 5]  # the cut last line is skipped
    assert run.val["val_loss"] == [(2, pytest.approx(3.0)), (5, pytest.approx(2.7))]


def test_figure_has_loss_parts_and_lr_for_every_run(tmp_path):
    pytest.importorskip("matplotlib")
    from kronos_engine.plotting import make_figure

    runs = [
        load_run(write_run(tmp_path / "a"), label="a"),
        load_run(write_run(tmp_path / "b", lr0=2e-4), label="b"),
    ]
    fig = make_figure(runs)
    ax_loss, ax_parts, ax_lr = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["loss", "loss parts", "learning rate"]
    assert {line.get_label() for line in ax_loss.lines} == {
        "a: train loss",
        "a: val_loss",
        "b: train loss",
        "b: val_loss",
    }
    assert len(ax_parts.lines) == 8  # 2 runs x (2 train + 2 validation parts)
    lr_b = next(line for line in ax_lr.lines if line.get_label() == "b: lr")
    assert list(lr_b.get_ydata()) == pytest.approx([2e-4 / s for s in range(1, 6)])
    # Each run has its own colour in every panel.
    colours = {line.get_label().split(":")[0]: line.get_color() for line in ax_lr.lines}
    assert colours["a"] != colours["b"]


def _plot(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PLOT), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_two_runs_on_one_png(tmp_path):
    pytest.importorskip("matplotlib")
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", metric="val_recon_mse")
    proc = _plot(a, b, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    png = tmp_path / "runs.png"  # the default name for several runs
    assert f"plot written to {png.name}" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_run_or_metrics_is_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = _plot(tmp_path / "empty", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'empty' / 'metrics.jsonl'}: no metrics file "
        f"(is '{tmp_path / 'empty'}' a run's output dir?)"
    ]
    with pytest.raises(PlotError, match="nothing: does not exist"):
        load_run(tmp_path / "nothing")


def test_without_matplotlib_says_how_to_install_it(tmp_path):
    # A stand-in package that fails to import, first on the path: like an environment without it.
    fake = tmp_path / "fake" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    run = write_run(tmp_path / "a")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "fake"))
    proc = _plot(run, cwd=tmp_path, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "matplotlib" in lines[0] and "pip install 'kronos-engine[plot]'" in lines[0]
    assert not (run / "loss.png").exists()


def test_load_run_rejects_an_empty_file(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(PlotError, match="holds no metric records"):
        load_run(tmp_path)
