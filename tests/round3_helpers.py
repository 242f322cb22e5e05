"""Shared pieces of the third bad-input round's tests (issue 19): a finished tiny CSV
fine-tune, private copies of it, and the "one error line, exit 2, nothing touched" check."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from engine_helpers import run, save_random_tokenizer, tiny_cfg
from test_faults_bad_input import EXIT_USAGE, _assert_untouched, snapshot

from kronos_engine.data import generate_demo_frames


def finished_csv_run(
    root: Path, symbols: int = 3, length: int = 240, freq: str = "day", max_steps: int = 2
) -> Path:
    """`root` with `klines/` (3 CSV symbols of 240 days), `tok/` and `exp/predictor/`: a tiny
    predictor fine-tuned for 2 steps on the CSVs (lookback 20, predict_window 4)."""
    data = root / "klines"
    data.mkdir()
    for symbol, frame in generate_demo_frames(symbols, length, freq, seed=5).items():
        frame.to_csv(data / f"{symbol}.csv", index=False)
    cfg = tiny_cfg(
        root,
        train_type="predictor",
        data_source="csv",
        data_path=str(data),
        tokenizer_path=str(save_random_tokenizer(root / "tok")),
        max_steps=max_steps,
        epochs=1,
    )
    run(cfg)
    assert (root / "exp" / "predictor" / "checkpoints").is_dir()
    return root


def private_copy(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished run and of the CSVs it read (its config.yaml names the copy), so
    a case the old code got wrong damages no other case's files."""
    shutil.copytree(finished / "exp", tmp_path / "exp")
    shutil.copytree(finished / "klines", tmp_path / "klines")
    config = tmp_path / "exp" / "predictor" / "config.yaml"
    text = config.read_text()
    assert str(finished / "klines") in text
    config.write_text(text.replace(str(finished / "klines"), str(tmp_path / "klines")))
    return tmp_path


def one_error(capsys, *needles: str) -> str:
    """The one `error:` line on stderr, holding every needle."""
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def refused(
    capsys, roots: Path | Sequence[Path], main: Callable, argv: list[str], *needles: str
) -> str:
    """`main(argv)` ends with exit 2 and one error line holding `needles`; every byte under
    `roots` (a folder or several) is as it was."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    before = [snapshot(root) for root in roots]
    capsys.readouterr()
    assert main(argv) == EXIT_USAGE
    line = one_error(capsys, *needles)
    for root, seen in zip(roots, before):
        _assert_untouched(seen, snapshot(root))
    return line
