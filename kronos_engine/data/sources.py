"""`data_source: auto` (the default): the source told by what `data_path` is, in training as in
forecasting, so a CSV file or folder needs no `--data_source=csv`.

No `data_path` is the built-in demo data; a CSV/Parquet file or a folder of them is `csv` (a
folder fetched by `sina`/`ccxt` holds one CSV per symbol, so it is read as `csv` too); a folder
with `calendars/` and `features/` is a Qlib provider (`qlib`). Anything else (a missing path,
another kind of file, an empty folder, a folder that is both) is one line naming `data_path`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kronos_engine.data.sources_csv import TABLE_SUFFIXES, table_suffix
from kronos_engine.data.spec import DataSpec
from kronos_engine.errors import DataError

log = logging.getLogger("kronos_engine.data")

AUTO = "auto"
QLIB_FOLDERS = ("calendars", "features")


def infer_data_source(data_path: str | None) -> tuple[str, str]:
    """The source `data_path` holds and why, as `("csv", "data_path is a CSV file")`; a path
    that is none of the readable kinds raises `DataError`."""
    if not data_path:
        return "demo", "no data_path: the built-in synthetic data"
    path = Path(data_path).expanduser()
    fix = "set data_source (csv or qlib) explicitly"
    if not path.exists():
        raise DataError(
            f"data_path: '{data_path}' does not exist; data_source auto reads a CSV/Parquet "
            f"file or folder, or a Qlib provider folder (calendars/, features/)"
        )
    if path.is_file():
        suffix = table_suffix(path)
        if suffix is None:
            raise DataError(
                f"data_path: '{data_path}' is neither a CSV/Parquet file (allowed suffixes: "
                f"{', '.join(TABLE_SUFFIXES)}) nor a folder; rename it or {fix}"
            )
        return "csv", f"data_path is a {_kind([suffix])} file"
    if not path.is_dir():
        raise DataError(f"data_path: '{data_path}' is neither a file nor a folder; {fix}")
    try:
        entries = list(path.iterdir())
    except OSError as exc:
        raise DataError(f"data_path: folder '{data_path}' cannot be listed ({exc})") from None
    suffixes = sorted({s for p in entries if p.is_file() and (s := table_suffix(p)) is not None})
    qlib = [name for name in QLIB_FOLDERS if (path / name).is_dir()]
    if qlib and suffixes:
        raise DataError(
            f"data_path: folder '{data_path}' holds both {_kind(suffixes)} files and a Qlib "
            f"provider's {', '.join(n + '/' for n in qlib)}; {fix}"
        )
    if qlib:
        return "qlib", "data_path is a Qlib provider folder (" + ", ".join(
            n + "/" for n in qlib
        ) + ")"
    if suffixes:
        return "csv", f"data_path is a folder of {_kind(suffixes)} files"
    raise DataError(
        f"data_path: folder '{data_path}' holds no CSV/Parquet files ({', '.join(TABLE_SUFFIXES)}) "
        f"and is not a Qlib provider folder (calendars/, features/); {fix}"
    )


def _kind(suffixes: list[str]) -> str:
    kinds = sorted({"Parquet" if s in (".parquet", ".pq") else "CSV" for s in suffixes})
    return "/".join(kinds)


def settle_data_source(spec: DataSpec, *, announce: bool = True) -> DataSpec:
    """`spec` with `data_source: auto` replaced by the source its `data_path` holds, logged
    in one line (`announce`); any other source as is."""
    if spec.data_source != AUTO:
        return spec
    source, why = infer_data_source(spec.data_path)
    if announce:
        log.info("data_source: auto -> %s (%s)", source, why)
    return spec.replace(data_source=source)
