"""Issue 22: `data_source: auto` (the default) is told by `data_path` in training as in
forecasting (one function, `data.sources.infer_data_source`), logged in one line and recorded
in the run's config.yaml; a path it cannot tell is one `error:` line with nothing touched."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
import yaml
from test_faults_bad_input import BASE, EXIT_USAGE, _assert_untouched, snapshot

from kronos_engine.cli.predict import data_spec
from kronos_engine.cli.train import main
from kronos_engine.data import generate_demo_frames, write_qlib_provider
from kronos_engine.data.sources import infer_data_source, settle_data_source
from kronos_engine.data.spec import DataSpec
from kronos_engine.errors import DataError


def _frames():
    return generate_demo_frames(2, 200, "day", seed=3)


def _csv_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    for symbol, frame in _frames().items():
        frame.to_csv(root / f"{symbol}.csv", index=False)
    return root


def test_each_kind_of_data_path_names_its_source(tmp_path):
    csvs = _csv_folder(tmp_path / "csvs")
    parquet = tmp_path / "one.parquet"
    next(iter(_frames().values())).to_parquet(parquet)
    provider = tmp_path / "provider"
    write_qlib_provider(_frames(), provider, "day")
    assert infer_data_source(None) == ("demo", "no data_path: the built-in synthetic data")
    assert infer_data_source(str(csvs)) == ("csv", "data_path is a folder of CSV files")
    assert infer_data_source(str(csvs / "DEMO000.csv")) == ("csv", "data_path is a CSV file")
    assert infer_data_source(str(parquet)) == ("csv", "data_path is a Parquet file")
    source, why = infer_data_source(str(provider))
    assert source == "qlib" and "Qlib provider folder (calendars/, features/)" in why
    spec = settle_data_source(DataSpec(data_path=str(provider)), announce=False)
    assert spec.data_source == "qlib"
    assert settle_data_source(DataSpec(data_source="csv")).data_source == "csv"  # as is


@pytest.mark.parametrize(
    "kind,needle",
    [
        ("missing", "does not exist; data_source auto reads a CSV/Parquet file or folder"),
        ("text_file", "is neither a CSV/Parquet file"),
        ("empty_folder", "holds no CSV/Parquet files"),
        ("both", "holds both CSV files and a Qlib provider's calendars/"),
    ],
)
def test_a_path_auto_cannot_tell_is_one_line(tmp_path, kind, needle):
    path = tmp_path / "data"
    if kind == "text_file":
        path = tmp_path / "notes.txt"
        path.write_text("x\n")
    elif kind == "empty_folder":
        path.mkdir()
    elif kind == "both":
        _csv_folder(path)
        (path / "calendars").mkdir()
    with pytest.raises(DataError, match="data_path: ") as info:
        infer_data_source(str(path))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_training_infers_csv_logs_it_once_and_records_it(tmp_path, caplog):
    """The public habit: `--data_path=<folder of CSVs>` with no `--data_source`."""
    caplog.set_level(logging.INFO, logger="kronos_engine")
    csvs = _csv_folder(tmp_path / "csvs")
    out = tmp_path / "out"
    args = [*BASE, "--train_type=tokenizer", f"--data_path={csvs}", f"--output_dir={out}"]
    assert main([*args, f"--cache_dir={tmp_path / 'cache'}"]) == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data_source:")]
    assert lines == ["data_source: auto -> csv (data_path is a folder of CSV files)"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["data_source"] == "csv"
    # The cache entry is the one an explicit csv run uses.
    assert [p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()] == ["csv"]


def test_training_on_a_path_auto_cannot_tell_is_one_line_and_touches_nothing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    before = snapshot(tmp_path)
    code = main(
        [*BASE, "--train_type=tokenizer", f"--data_path={empty}", f"--exp_dir={tmp_path / 'e'}"]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == EXIT_USAGE
    assert len(err) == 1 and err[0].startswith(f"error: data_path: folder '{empty}' holds no")
    _assert_untouched(before, snapshot(tmp_path))


def _predict_args(**values) -> argparse.Namespace:
    keys = ("data_path", "data_source", "instruments", "freq", "bad_data")
    return argparse.Namespace(**{k: values.get(k) for k in keys})


def test_predict_tells_the_source_with_the_same_function(tmp_path):
    provider = tmp_path / "provider"
    write_qlib_provider(_frames(), provider, "day")
    assert data_spec({}, _predict_args(data_path=str(provider))).data_source == "qlib"
    csvs = _csv_folder(tmp_path / "csvs")
    assert data_spec({}, _predict_args(data_path=str(csvs))).data_source == "csv"
    assert data_spec({}, _predict_args()).data_source == "demo"  # no data: the demo data
    with pytest.raises(DataError, match="does not exist"):
        data_spec({}, _predict_args(data_path=str(tmp_path / "nowhere")))
