"""Property 6, second round (issue 11): malformed data, configs and concurrent runs that the
first matrix (`test_faults_bad_input.py`) did not cover.

Each class either does the right thing (checked on the data the engine reads) or ends the CLI
with one line `error: ...` naming the file, row, key or run and what is allowed, a non-zero exit
code, and every byte under the case folder unchanged. The error matrix goes through
`kronos_engine.cli.train.main` in this process, like the first round's.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import faultinject as fi
import numpy as np
import pandas as pd
import pytest
from test_faults_bad_input import BASE, EXIT_USAGE, _assert_untouched, _csv, snapshot

from kronos_engine.cli.train import main
from kronos_engine.config import TrainConfig, read_yaml_config
from kronos_engine.data import (
    build_datasets,
    generate_demo_frames,
    load_frames,
    write_qlib_provider,
)

# ------------------------------------------------------------------ inputs


def _frame(rows: int = 200, freq: str = "day", seed: int = 5) -> pd.DataFrame:
    return generate_demo_frames(1, rows, freq, seed=seed)["DEMO000"]


def _with_stamps(stamps: list[str], rows: int | None = None) -> pd.DataFrame:
    frame = _frame(rows or len(stamps))
    return frame.assign(timestamps=stamps)


def _dst_stamps(rows: int) -> list[str]:
    """New York 09:30 bars on business days across the 2021-11-07 switch (-04:00 -> -05:00)."""
    days = pd.bdate_range("2021-09-01", periods=rows)
    return [
        f"{d:%Y-%m-%d}T09:30:00{'-04:00' if d < pd.Timestamp('2021-11-07') else '-05:00'}"
        for d in days
    ]


def _far_offsets(rows: int) -> list[str]:
    """+08:00 rows, then the same instants written in UTC (`Z`) from row 101 on."""
    days = pd.bdate_range("2021-01-04", periods=rows)
    return [
        f"{d:%Y-%m-%d}T09:30:00+08:00" if i < 100 else f"{d:%Y-%m-%d}T01:30:00Z"
        for i, d in enumerate(days)
    ]


def _mixed_frequency(rows_daily: int = 120, rows_5min: int = 200) -> pd.DataFrame:
    daily = _frame(rows_daily, "day")
    intraday = _frame(rows_5min, "5min", seed=6)
    shift = daily["timestamps"].iloc[-1].normalize() - intraday["timestamps"].iloc[0].normalize()
    intraday["timestamps"] = intraday["timestamps"] + shift + pd.Timedelta(days=1)
    return pd.concat([daily, intraday], ignore_index=True)


def _tiny_prices(frame: pd.DataFrame) -> pd.DataFrame:
    for col in ("open", "high", "low", "close"):
        frame[col] = frame[col] * 1e-9
    return frame


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        pytest.importorskip("pyarrow")
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def _qlib(root: Path, name: str) -> Path:
    return write_qlib_provider(generate_demo_frames(2, 200, "day", seed=5), root / name, "day")


def _odd_bin(root: Path) -> tuple[Path, Path]:
    provider = _qlib(root, "qlib_odd_bin")
    target = provider / "features" / "demo001" / "close.day.bin"
    target.write_bytes(target.read_bytes()[:-3])
    return provider, target


def _bad_calendar(root: Path) -> Path:
    provider = _qlib(root, "qlib_bad_calendar")
    calendar = provider / "calendars" / "day.txt"
    lines = calendar.read_text().splitlines()
    lines[4] = "2020-13-45"
    calendar.write_text("\n".join(lines) + "\n")
    return provider


def _csv_args(path: Path, *extra: str) -> list[str]:
    return ["--train_type=tokenizer", "--data_source=csv", f"--data_path={path}", *extra]


def _cases(root: Path, run: Path, other: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments, fragment the one error line must contain). `run` and `other` hold
    two finished runs."""
    tok = ["--train_type=tokenizer"]
    odd_provider, odd_bin = _odd_bin(root)
    (root / "instr.yaml").write_text("instruments: 000010\n")
    return {
        # 1. UTC offsets further apart than a daylight-saving switch
        "offsets_plus8_and_z_csv": (
            _csv_args(_write(_with_stamps(_far_offsets(200)), root / "far.csv")),
            "far.csv: symbol far, row 101: timestamp '2021-05-24T01:30:00Z' has UTC offset Z",
        ),
        "offsets_plus8_and_z_parquet": (
            _csv_args(_write(_with_stamps(_far_offsets(200)), root / "farpq.parquet")),
            "farpq.parquet: symbol farpq, row 101",
        ),
        "offset_on_some_rows_only": (
            _csv_args(
                _write(
                    _with_stamps([s[:19] if i == 7 else s for i, s in enumerate(_dst_stamps(200))]),
                    root / "someoff.csv",
                )
            ),
            "someoff.csv: symbol someoff, row 8: timestamp '2021-09-10T09:30:00' has no UTC offset",
        ),
        # 3. a damaged Qlib provider
        "qlib_bin_cut_to_odd_bytes": (
            tok + ["--data_source=qlib", f"--data_path={odd_provider}"],
            f"{odd_bin}: 801 bytes is not a Qlib feature file",
        ),
        "qlib_calendar_line_not_a_date": (
            tok + ["--data_source=qlib", f"--data_path={_bad_calendar(root)}"],
            "calendars/day.txt:5: calendar entry '2020-13-45' is not a date",
        ),
        # 4. non-finite / out-of-range numbers in the config
        "lr_nan": (tok + ["--lr=nan"], "lr: must be a number, got nan"),
        "weight_decay_inf": (tok + ["--weight_decay=inf"], "weight_decay: must be finite"),
        "clip_nan": (tok + ["--clip=nan"], "clip: must be a number, got nan"),
        "clip_inf": (tok + ["--clip=inf"], "clip: must be finite, got inf"),
        "split_ratios_nan": (
            tok + ["--split_ratios=nan,0.5,0.5"],
            "split_ratios: must be a number, got nan",
        ),
        "seed_beyond_64_bits": (
            tok + [f"--seed={2**64 + 5}"],
            f"seed: {2**64 + 5} does not fit in 64 bits",
        ),
        "seed_negative": (tok + ["--seed=-1"], "seed: must lie in [0, 2**63 - 1], got -1"),
        # 5. finite in float64, overflows float32
        "volume_1e39": (
            _csv_args(_csv(root, "huge", _set(40, "volume", 1e39))),
            "huge.csv: symbol huge, row 41 (",
        ),
        "amount_overflows_float32": (
            _csv_args(
                _csv(root, "bigamt", lambda f: f.drop(columns=["amount"]).assign(volume=1e37))
            ),
            "amount = mean(open, high, low, close) * volume",
        ),
        # 6. day/month order that the column cannot settle
        "dates_of_both_orders": (
            _csv_args(
                _write(
                    _with_stamps(
                        [f"{d:%d/%m/%Y}" for d in pd.bdate_range("2021-01-01", periods=100)]
                        + [f"{d:%m/%d/%Y}" for d in pd.bdate_range("2021-06-01", periods=100)]
                    ),
                    root / "orders.csv",
                )
            ),
            "need different day/month orders",
        ),
        # 8. inputs that normalise to nothing
        "prices_around_1e-9": (
            _csv_args(_csv(root, "tiny", _tiny_prices)),
            "tiny.csv: symbol tiny, row 1 (2",
        ),
        # 9. mixed frequencies in one symbol
        "daily_rows_then_5min_rows": (
            _csv_args(_write(_mixed_frequency(), root / "mixed.csv"), "--freq=5min"),
            "mixed.csv: symbol mixed, row 1 (",
        ),
        "intraday_rows_with_freq_day": (
            _csv_args(_write(_frame(300, "5min"), root / "intra.csv"), "--freq=day"),
            "intra.csv: symbol intra, row 2 (",
        ),
        "1min_rows_with_freq_5min": (
            _csv_args(_write(_frame(300, "1min"), root / "onemin.csv"), "--freq=5min"),
            "bar 1 min after the previous one",
        ),
        # 10. contradicting settings
        "predictor_with_the_tokenizer_strategy": (
            ["--train_type=predictor", "--strategy=tokenizer_recon"],
            "strategy: 'tokenizer_recon' trains a tokenizer, but train_type is 'predictor'",
        ),
        "tokenizer_with_the_predictor_strategy": (
            tok + ["--strategy=predictor_next_token"],
            "strategy: 'predictor_next_token' trains a predictor, but train_type is 'tokenizer'",
        ),
        # 11. --resume=A into another run B
        "resume_a_into_run_b": (
            tok + [f"--resume={run}", f"--output_dir={other}"],
            f"resume: '{run}' is a checkpoint of run '{run}', but output_dir '{other}' holds "
            "another run",
        ),
        "resume_a_step_into_run_b": (
            tok
            + [f"--resume={sorted((run / 'checkpoints').iterdir())[0]}", f"--output_dir={other}"],
            f"is a checkpoint of run '{run}', but output_dir '{other}' holds another run",
        ),
        # trap: data_path with data_source demo (without data_source it is read: auto, issue
        # 22, test_data_source_auto.py)
        "data_path_with_data_source_demo": (
            tok + ["--data_source=demo", f"--data_path={_csv(root, 'plain')}"],
            "is set but data_source is 'demo'",
        ),
        # 7. (the YAML side is a right-thing test below); a missing symbol still names it
        "instruments_from_yaml_keep_leading_zeros": (
            _csv_args(_csv(root, "000011"), f"--config={root / 'instr.yaml'}"),
            "instruments: symbol(s) 000010 not found",
        ),
    }


def _set(row: int, column: str, value):
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        return frame

    return edit


CASE_NAMES = [
    "offsets_plus8_and_z_csv",
    "offsets_plus8_and_z_parquet",
    "offset_on_some_rows_only",
    "qlib_bin_cut_to_odd_bytes",
    "qlib_calendar_line_not_a_date",
    "lr_nan",
    "weight_decay_inf",
    "clip_nan",
    "clip_inf",
    "split_ratios_nan",
    "seed_beyond_64_bits",
    "seed_negative",
    "volume_1e39",
    "amount_overflows_float32",
    "dates_of_both_orders",
    "prices_around_1e-9",
    "daily_rows_then_5min_rows",
    "intraday_rows_with_freq_day",
    "1min_rows_with_freq_5min",
    "predictor_with_the_tokenizer_strategy",
    "tokenizer_with_the_predictor_strategy",
    "resume_a_into_run_b",
    "resume_a_step_into_run_b",
    "data_path_with_data_source_demo",
    "instruments_from_yaml_keep_leading_zeros",
]


def _finished_run(tmp_path_factory, dest: Path) -> Path:
    import shutil

    reference, _ = fi.reference_run(tmp_path_factory, "tokenizer")
    shutil.copytree(reference, dest)
    (dest / "SENTINEL").write_text("user data that must survive\n")
    return dest


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_round2_fails_with_one_line_and_touches_nothing(
    tmp_path_factory, tmp_path, capsys, case
):
    run = _finished_run(tmp_path_factory, tmp_path / "run")
    other = _finished_run(tmp_path_factory, tmp_path / "other")
    fresh = tmp_path / "out"
    fresh.mkdir()
    (fresh / "SENTINEL").write_text("user data that must survive\n")
    args, expected = _cases(tmp_path, run, other)[case]
    if not any(a.startswith("--output_dir=") for a in args):
        args = args + [f"--output_dir={fresh}"]
    args = [*BASE, *args, f"--exp_dir={tmp_path / 'exp'}"]
    if "--freq=5min" in args or case == "instruments_from_yaml_keep_leading_zeros":
        args = [a for a in args if not a.startswith(("--demo_", "--lookback", "--predict"))]
        args += ["--lookback_window=20", "--predict_window=4"]
    before = snapshot(tmp_path)
    code = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert code == EXIT_USAGE, err
    _assert_untouched(before, snapshot(tmp_path))


def test_the_round2_matrix_covers_every_error_class():
    assert len(set(CASE_NAMES)) == len(CASE_NAMES) >= 20


# ------------------------------------------------------------------ the right thing


def _cfg(path: Path, **kw) -> TrainConfig:
    base = dict(
        data_source="csv",
        data_path=str(path),
        lookback_window=10,
        predict_window=2,
        split_ratios=[0.7, 0.3, 0.0],
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_daylight_saving_switch_keeps_local_wall_clock_time(tmp_path, suffix):
    """Class 1: `-04:00` -> `-05:00` is read (no traceback), every bar stays at 09:30."""
    path = _write(_with_stamps(_dst_stamps(120)), tmp_path / f"ny{suffix}")
    (frame,) = load_frames(_cfg(path)).values()
    stamps = pd.DatetimeIndex(frame["timestamps"])
    assert len(stamps) == 120 and stamps.tz is None
    assert set(stamps.strftime("%H:%M")) == {"09:30"}
    assert list(stamps.date) == list(pd.bdate_range("2021-09-01", periods=120).date)


def test_a_folder_of_symlinks_builds_and_reuses_its_cache(tmp_path):
    """Class 2: links to files elsewhere, with cache_dir: the fingerprint names the links."""
    elsewhere, folder = tmp_path / "elsewhere", tmp_path / "links"
    elsewhere.mkdir()
    folder.mkdir()
    for name in ("AAA", "BBB"):
        _csv(elsewhere, name)
        (folder / f"{name}.csv").symlink_to(elsewhere / f"{name}.csv")
    cfg = _cfg(folder, cache_dir=str(tmp_path / "cache"))
    first = build_datasets(cfg)
    second = build_datasets(cfg)
    assert first.summary["cache"] != second.summary["cache"], (first.summary, second.summary)
    assert second.summary["cache"] == "hit", second.summary
    assert len(first.train) == len(second.train) > 0
    # The same files in a real folder fingerprint the same as through the links.
    from kronos_engine.data.cache import fingerprint_inputs

    assert fingerprint_inputs(cfg) == fingerprint_inputs(_cfg(elsewhere))


def test_day_first_dates_are_read_day_first_and_never_resorted(tmp_path):
    """Class 6: `01/07/2021` is the 1st of July when the column has a day above 12."""
    days = pd.bdate_range("2021-01-01", periods=150)
    iso = _csv(tmp_path, "iso", rows=150)
    dmy = _write(
        _frame(150).assign(timestamps=[f"{d:%d/%m/%Y}" for d in days]), tmp_path / "dmy.csv"
    )
    report_frames = {}
    for name, path in (("iso", iso), ("dmy", dmy)):
        (frame,) = load_frames(_cfg(path, bad_data="repair")).values()
        report_frames[name] = frame
    assert list(pd.DatetimeIndex(report_frames["dmy"]["timestamps"]).date) == list(days.date)
    np.testing.assert_array_equal(
        report_frames["dmy"].drop(columns="timestamps").to_numpy(),
        report_frames["iso"].drop(columns="timestamps").to_numpy(),
    )


def test_dates_that_fit_both_orders_are_settled_by_their_order_in_time(tmp_path):
    """Class 6: no day above 12 (Jan..Dec 1st-12th): the sorted reading wins, else refused."""
    stamps = [f"{m:02d}/{d:02d}/2021" for m in range(1, 13) for d in range(1, 13)]  # mm/dd
    (frame,) = load_frames(_cfg(_write(_with_stamps(stamps), tmp_path / "md.csv"))).values()
    assert pd.Timestamp(frame["timestamps"].iloc[1]) == pd.Timestamp("2021-01-02")


def test_separate_date_and_time_columns_keep_the_time(tmp_path):
    """Class 6: `date` + `time` columns are one timestamp, the time of day is not dropped."""
    frame = _frame(300, "5min")
    stamps = pd.DatetimeIndex(frame["timestamps"])
    split = frame.drop(columns="timestamps")
    split.insert(0, "time", stamps.strftime("%H:%M:%S"))
    split.insert(0, "date", stamps.strftime("%Y-%m-%d"))
    path = _write(split, tmp_path / "split.csv")
    (read,) = load_frames(_cfg(path, freq="5min")).values()
    assert list(pd.DatetimeIndex(read["timestamps"])) == list(stamps)


def test_yaml_instruments_keep_their_characters(tmp_path):
    """Class 7: `instruments: 000010` is the code 000010, not the octal number 8."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "instruments: 000010\nexp_dir: 0123\ntrain_time_range: [2020-01-01, 2020-06-30]\n"
        "callbacks: [mod:Cls]\nepochs: 010\n"
    )
    values = read_yaml_config(path)
    assert values["instruments"] == "000010" and values["exp_dir"] == "0123"
    assert values["train_time_range"] == ["2020-01-01", "2020-06-30"]
    assert values["callbacks"] == ["mod:Cls"] and values["epochs"] == 8  # ints stay YAML ints


def test_instruments_from_yaml_select_the_symbol(tmp_path):
    _csv(tmp_path, "000010")
    _csv(tmp_path, "000011")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data_source: csv\ndata_path: {tmp_path}\ninstruments: 000010\nlookback_window: 10\n"
        "predict_window: 2\n"
    )
    cfg = TrainConfig.from_dict(read_yaml_config(config))
    assert list(load_frames(cfg)) == ["000010"]


def test_prices_of_normal_scale_keep_the_public_normalisation(tmp_path):
    """Class 8: the scale check never fires on normal data (public epsilon kept)."""
    from kronos_engine.data.features import NORM_EPS

    assert NORM_EPS == 1e-5
    frame = _frame(200)
    for col in ("open", "high", "low", "close"):
        frame[col] = frame[col] * 1e-3  # penny prices, std still >> 1e-5
    (read,) = load_frames(_cfg(_write(frame, tmp_path / "penny.csv"))).values()
    assert len(read) == 200


# ------------------------------------------------------------------ one run per output dir


LOCK = ".lock"  # kronos_engine.layout.LOCK_NAME
HOLD = """
import sys, time
from kronos_engine import run as run_dir
run_dir.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def _holder(out: Path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, env=fi.env(), text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_output_dir_is_refused_naming_the_holder(tmp_path, capsys):
    """Class 12: the lock names the holder; a run into a held folder writes nothing."""
    out = tmp_path / "out"
    holder = _holder(out)
    try:
        before = snapshot(tmp_path)
        code = main([*BASE, "--train_type=tokenizer", f"--output_dir={out}"])
        line = capsys.readouterr().err.strip()
        assert code == EXIT_USAGE, line
        assert line.startswith(f"error: output_dir: '{out}' is in use by a running training run")
        assert f"pid {holder.pid} " in line and "\n" not in line, line
        _assert_untouched(before, snapshot(tmp_path))
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_run_blocks_nothing(tmp_path_factory, tmp_path, capsys):
    """Class 12: SIGKILL leaves `.lock` behind; `--resume` and a fresh run still go ahead."""
    run = _finished_run(tmp_path_factory, tmp_path / "run")
    holder = _holder(run)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (run / LOCK).exists()  # the stale file is there
    extra = [
        "--strategy=faultinject:FaultyTokenizer",
        f"--exp_dir={tmp_path}",
        "--max_steps=6",
        "--scheduler=constant",
    ]
    args = fi.train_args("tokenizer", run)[1:]
    args = [a for a in args if not a.startswith(("--strategy", "--exp_dir"))]
    code = main(["--train_type=tokenizer", *args, *extra, f"--resume={run}"])
    assert code == 0, capsys.readouterr().err
    assert not (run / LOCK).exists()


def test_two_runs_started_together_into_one_dir_one_wins(tmp_path):
    """Class 12: two real processes race for one output dir: exactly one trains, the other
    stops at once with one line naming the holder; the winner's run is whole."""
    out = tmp_path / "out"
    args = fi.train_args("tokenizer", out)
    procs = [fi.start(args, tmp_path / "logs"), fi.start(args, tmp_path / "logs")]
    results = [fi.finish(p) for p in procs]
    codes = sorted(r.returncode for r in results)
    assert codes == [0, EXIT_USAGE], results
    loser = next(r for r in results if r.returncode == EXIT_USAGE)
    lines = [line for line in loser.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, loser
    assert "is in use by a running training run" in lines[0] or "already holds a run" in lines[0]
    assert (out / "summary.json").is_file() and (out / "best").is_dir()
    assert not (out / LOCK).exists()


def test_the_lock_is_given_back_when_a_library_run_ends(tmp_path):
    """The Python API takes and gives back the same lock (TrainContextBuilder + Trainer)."""
    from kronos_engine import TrainContextBuilder, Trainer

    out = tmp_path / "out"
    cfg = TrainConfig(
        train_type="tokenizer",
        output_dir=str(out),
        demo_symbols=2,
        demo_length=200,
        lookback_window=20,
        predict_window=4,
        batch_size=4,
        train_samples_per_epoch=8,
        val_samples=4,
        epochs=1,
        progress_bar=False,
        device="cpu",
    )
    from kronos_engine import run as run_dir

    ctx = TrainContextBuilder(cfg).build()
    assert run_dir.holds(out) and (out / LOCK).exists()
    Trainer(ctx).fit()
    assert not run_dir.holds(out) and not (out / LOCK).exists()


def test_resume_continues_a_run_in_its_own_folder_or_a_new_one(tmp_path_factory, tmp_path):
    """Class 11, the allowed side: `--resume=A/checkpoints` into A, and a fork of A into an
    empty folder, both run; A's files are untouched by the fork."""
    from kronos_engine.config import TrainConfig as Cfg
    from kronos_engine.run.outputs import check_output_dir

    run = _finished_run(tmp_path_factory, tmp_path / "run")
    check_output_dir(Cfg(output_dir=str(run), resume=str(run / "checkpoints")))
    before = snapshot(run)
    fork = tmp_path / "fork"
    args = fi.train_args("tokenizer", fork) + [f"--resume={run}"]
    assert main(args) == 0
    assert (fork / "summary.json").is_file()
    _assert_untouched(before, snapshot(run))
