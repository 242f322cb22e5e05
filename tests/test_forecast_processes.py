"""Forecasting and evaluation across processes: `--nprocs 2` writes the one process's files, byte
for byte, greedy and sampled; sampled numbers depend on no batch (`--batch_size`, the API's
chunks); the per-symbol metrics are linear in the symbols and keep their numbers.

One tiny trained experiment is shared by the module (torchrun start-ups are slow on 2 cores);
the single-process runs are in-process calls of the commands, the `--nprocs` runs subprocesses.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kronos_engine.cli import evaluate as evaluate_cli
from kronos_engine.cli import predict as predict_cli
from kronos_engine.evaluation import metrics as M
from kronos_engine.evaluation.scoring import Batch, MetricAccumulator
from kronos_engine.forecasting import KronosPredictor
from kronos_engine.forecasting.sampling import sample_keyed, series_key
from kronos_engine.models import build_predictor, build_tokenizer
from tests.engine_helpers import only_error_line
from tests.test_cli import TINY, check_ok, run_cli

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "scripts" / "pipeline.py"
GREEDY = ["--top_k=1"]
SAMPLED = ["--sample_count=3", "--T=1.0", "--top_p=0.9", "--seed=5"]


@pytest.fixture(scope="module")
def exp_dir(tmp_path_factory) -> Path:
    """A finished tiny pipeline on 3 demo symbols (3 batches of one: 2 ranks, an uneven tail)."""
    root = tmp_path_factory.mktemp("procs")
    proc = run_cli(
        f"--exp_dir={root / 'exp'}", *TINY, "--demo_symbols=3", "--max_steps=2", cwd=root,
        script=PIPELINE,
    )  # fmt: skip
    check_ok(proc)
    return root / "exp"


def in_two_processes(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = run_cli("--nprocs=2", *args, cwd=cwd, script=REPO / "scripts" / script)
    check_ok(proc)
    assert "starting 2 processes" in proc.stderr
    return proc


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_predict_in_two_processes_writes_the_one_process_file(exp_dir, tmp_path, sampling):
    quantiles = ["--quantiles=0.1,0.9"] if sampling is SAMPLED else []
    common = [f"--exp_dir={exp_dir}", *sampling, *quantiles]
    assert predict_cli.main([*common, "--batch_size=3", f"--output={tmp_path / 'one.csv'}"]) == 0
    in_two_processes(
        "predict.py", *common, "--batch_size=1", f"--output={tmp_path / 'two.csv'}", cwd=tmp_path
    )
    one, two = (tmp_path / "one.csv").read_bytes(), (tmp_path / "two.csv").read_bytes()
    assert one == two
    assert pd.read_csv(tmp_path / "one.csv")["symbol"].nunique() == 3


def test_sampled_predictions_do_not_depend_on_the_batch_size(exp_dir, tmp_path):
    outputs = []
    for size in (1, 2, 3):
        out = tmp_path / f"b{size}.csv"
        args = [f"--exp_dir={exp_dir}", *SAMPLED, f"--batch_size={size}", f"--output={out}"]
        assert predict_cli.main(args) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    table = pd.read_csv(tmp_path / "b1.csv")
    other = predict_cli.main(
        [f"--exp_dir={exp_dir}", *SAMPLED[:-1], "--seed=6", f"--output={tmp_path / 's6.csv'}"]
    )
    assert other == 0 and not table.equals(pd.read_csv(tmp_path / "s6.csv"))  # the seed counts


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_evaluate_in_two_processes_writes_the_one_process_files(exp_dir, tmp_path, sampling):
    # No plots: rank 0 draws them from the files compared here, as one process does. Sampled:
    # also the paper's tasks (the scaling runs are sharded like the main one).
    tasks = ["--volatility", "--scaling=1,2", "--scaling_seeds=2"] if sampling is SAMPLED else []
    common = [
        f"--exp_dir={exp_dir}", *sampling, *tasks, "--no_plots", "--max_origins=9",
        "--batch_size=4", "--no_progress",
    ]  # fmt: skip
    assert evaluate_cli.main([*common, f"--output={tmp_path / 'one'}"]) == 0
    in_two_processes("evaluate.py", *common, f"--output={tmp_path / 'two'}", cwd=tmp_path)
    one, two = files_of(tmp_path / "one"), files_of(tmp_path / "two")
    assert {"forecasts.parquet", "metrics.json", "metrics_by_symbol.csv"} <= one.keys()
    if tasks:
        assert {"volatility.json", "scaling.json"} <= one.keys()
    assert one.keys() == two.keys()
    assert [name for name in one if one[name] != two[name]] == []


def test_sampled_evaluation_does_not_depend_on_the_batch_size(exp_dir, tmp_path):
    """Byte for byte, `forecasts.parquet` too: its rows go origin by origin (then model and
    step) and its row groups have a fixed size, whatever the batches were."""
    files = []
    names = ("metrics.json", "metrics_by_symbol.csv", "forecasts.parquet")
    for size in (1, 3, 64):
        out = tmp_path / f"b{size}"
        args = [f"--exp_dir={exp_dir}", *SAMPLED, "--max_origins=6", f"--batch_size={size}"]
        assert evaluate_cli.main([*args, "--no_plots", "--no_progress", f"--output={out}"]) == 0
        files.append([(out / n).read_bytes() for n in names])
    assert files[0] == files[1] == files[2]
    table = pd.read_parquet(tmp_path / "b3" / "forecasts.parquet")
    assert table["crps"].notna().all() and table["model"].nunique() > 1
    first = table.groupby(["symbol", "origin"], sort=False).ngroup()
    assert (first.diff().fillna(0) >= 0).all()  # one origin's rows (every model's) together


def test_a_bad_flag_with_nprocs_is_one_line_before_any_process(exp_dir, tmp_path):
    for script, bad in (("predict.py", "--top_p=1.5"), ("evaluate.py", "--stride=0")):
        proc = run_cli(
            "--nprocs=2", f"--exp_dir={exp_dir}", bad, f"--output={tmp_path / 'x.csv'}",
            cwd=tmp_path, script=REPO / "scripts" / script,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and bad.split("=")[0] in errors[0], proc.stderr
        assert "starting 2 processes" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.csv").exists()


def test_nprocs_with_one_gpu_index_is_refused(exp_dir, capsys):
    code = predict_cli.main(["--nprocs=2", f"--exp_dir={exp_dir}", "--device=cuda:1"])
    assert code == 2
    assert only_error_line(capsys).startswith("error: --device")


# ------------------------------------------------------------------------------- the API


@pytest.fixture(scope="module")
def predictor() -> KronosPredictor:
    torch.manual_seed(0)
    return KronosPredictor(build_predictor("tiny"), build_tokenizer("tiny"), device="cpu")


def demo_frames(n: int, length: int = 40) -> list[pd.DataFrame]:
    frames = []
    for i in range(n):
        rng = np.random.default_rng(i)
        close = 20 * np.exp(np.cumsum(rng.normal(0, 0.02, length)))
        stamps = pd.date_range("2024-01-01", periods=length, freq="D")
        frames.append(
            pd.DataFrame(
                {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
                 "volume": rng.integers(100, 900, length).astype(float),
                 "amount": close * 500},
                index=stamps,
            )
        )  # fmt: skip
    return frames


def test_the_api_samples_each_series_from_its_own_stream(predictor):
    frames, keys = demo_frames(5), ["A", "B", "C", "D", "E"]
    kwargs = dict(pred_len=6, sample_count=3, top_p=0.9, seed=11, verbose=False)

    def samples(chunk: int) -> np.ndarray:
        parts = [
            predictor.predict_batch(
                frames[i : i + chunk], keys=keys[i : i + chunk], return_samples=True, **kwargs
            )[1]
            for i in range(0, len(frames), chunk)
        ]
        return np.concatenate(parts)

    whole = samples(5)
    assert np.array_equal(samples(1), whole) and np.array_equal(samples(3), whole)
    alone = predictor.predict(frames[2], key="C", return_samples=True, **kwargs)[1]
    assert np.array_equal(alone, whole[2])
    # Without keys a series is its position: the first of a batch is `predict` of it alone.
    first = predictor.predict_batch(frames, return_samples=True, **kwargs)[1][0]
    assert np.array_equal(predictor.predict(frames[0], return_samples=True, **kwargs)[1], first)
    assert not np.array_equal(whole[0, 0], whole[0, 1])  # each sample path its own stream
    renamed = predictor.predict_batch(frames, keys=list("VWXYZ"), return_samples=True, **kwargs)
    assert not np.array_equal(renamed[1], whole)  # the key is part of the identity


def test_keyed_draws_of_a_row_ignore_the_other_rows():
    logits = torch.randn(7, 32, generator=torch.Generator().manual_seed(3))
    keys = torch.tensor([series_key(0, ("S", i)) for i in range(7)])
    together = sample_keyed(logits, keys, draw=4, top_p=0.95)
    alone = torch.cat(
        [sample_keyed(logits[i : i + 1], keys[i : i + 1], 4, top_p=0.95) for i in range(7)]
    )
    assert torch.equal(together, alone)
    assert torch.equal(sample_keyed(logits, keys, 4, top_k=1), logits.argmax(-1, keepdim=True))
    assert series_key(0, ("S", 1)) == series_key(0, ("S", 1)) != series_key(1, ("S", 1))


# ------------------------------------------------------------------ per-symbol bookkeeping


def accumulated(n_symbols: int, per_symbol: int = 3, h: int = 4) -> MetricAccumulator:
    """Three models' forecasts of `per_symbol` dates x `n_symbols` symbols, in batches of 64."""
    rng = np.random.default_rng(0)
    acc = MetricAccumulator()
    symbols = np.tile(np.arange(n_symbols), per_symbol)
    days = np.repeat(np.arange(per_symbol), n_symbols).astype(np.int64) * 86_400 * 10**9
    true = 100 + rng.normal(0, 1, (symbols.size, h)).cumsum(axis=1)
    for start in range(0, symbols.size, 64):
        i = np.arange(start, min(symbols.size, start + 64))
        for model in ("kronos", "naive", "drift"):
            pred = true[i] + rng.normal(0, 1, (i.size, h))
            pred[::5, -1] = true[i][::5, 0] - 0.5  # some flat and some wrong-way forecasts
            acc.add(Batch(model, [f"S{s:05d}" for s in symbols[i]], days[i],
                          np.zeros((i.size, h), np.int64), pred, true[i], true[i, 0] - 0.5,
                          np.abs(rng.normal(1, 0.1, i.size))))  # fmt: skip
    return acc


def test_metrics_by_symbol_keep_their_numbers():
    acc = accumulated(40)
    table = acc.by_symbol()
    returns = {m: acc.horizon_returns(m) for m in acc.models}
    for row in table.itertuples():
        r = returns[row.model][returns[row.model].symbol == row.symbol]  # the filter per symbol
        assert row.direction_accuracy == M.direction_accuracy(r.pred_return, r.true_return)
        assert row.origins == len(r) == 3
    assert table.direction_accuracy.nunique() > 1


def test_metrics_by_symbol_of_2000_symbols_take_seconds():
    acc = accumulated(2000, per_symbol=2)
    start = time.perf_counter()
    table = acc.by_symbol()
    took = time.perf_counter() - start
    assert len(table) == 3 * 2000
    assert took < 10, f"{took:.1f} s for 2,000 symbols (the per-symbol filter took minutes)"


def test_the_forecast_file_is_written_in_fixed_row_groups_whatever_the_batches(
    tmp_path, monkeypatch
):
    """The sink holds fewer rows than a group at any time, and the groups (so the bytes) do
    not follow the sizes of the tables it was handed."""
    import pyarrow.parquet as pq

    from kronos_engine.evaluation.report import ForecastSink

    monkeypatch.setattr(ForecastSink, "ROW_GROUP_ROWS", 10)
    frame = pd.DataFrame({"model": ["m"] * 47, "close_pred": np.arange(47, dtype=np.float64)})
    written = []
    for name, cuts in (("a", [0, 1, 4, 25, 26, 47]), ("b", [0, 47]), ("c", list(range(48)))):
        sink = ForecastSink(tmp_path / f"{name}.parquet")
        for lo, hi in zip(cuts, cuts[1:]):
            sink(frame.iloc[lo:hi])
            assert sink._pending_rows < ForecastSink.ROW_GROUP_ROWS
        sink.close()
        meta = pq.ParquetFile(tmp_path / f"{name}.parquet").metadata
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [10] * 4 + [7]
        written.append((tmp_path / f"{name}.parquet").read_bytes())
    assert written[0] == written[1] == written[2]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), frame)
