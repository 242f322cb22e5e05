"""Whether MLflow can use a `tracking_uri`, decided offline before any run folder exists.

A run starts its trackers only once its folder is written; a URI MLflow cannot store runs in
would then fail after the folder was taken, so that the fixed rerun needs `--overwrite`. Here
the URI is checked without network and without writing anything: its scheme must be one MLflow
has a store for; a local store (a folder, `file:`, `sqlite:`) must be creatable where it points;
a database URI must parse and have its driver installed. A server (`http(s)://`, `databricks`)
can only be reached once the run starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from kronos_engine.errors import ConfigError

# MLflow 2/3 tracking-store schemes, used when its registry cannot be asked.
KNOWN_SCHEMES = (
    "", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks",
    "databricks-uc", "uc",
)  # fmt: skip
DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
SQLITE_HEADER = b"SQLite format 3\x00"


def check_tracking_uri(uri: str) -> None:
    """Raise `ConfigError` naming `tracking_uri` when MLflow could not use `uri`."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+", 1)[0]  # postgresql+psycopg2:// names its driver
    if len(scheme) == 1:  # a Windows drive letter: a local path
        scheme = ""
    schemes = _mlflow_schemes()
    if scheme not in schemes:
        raise ConfigError(
            f"tracking_uri: '{uri}' has the scheme '{parsed.scheme}', which MLflow cannot store "
            f"runs in; use a folder, file:, sqlite:///<file> or a server (http(s)://...); "
            f"schemes: {[s for s in schemes if s]}"
        )
    if scheme in ("", "file"):
        path = Path(url2pathname(parsed.path) if scheme else uri).expanduser()
        _check_folder(uri, path)
    elif scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme in DATABASES:
        _check_database(uri)
    elif scheme in ("http", "https") and not parsed.netloc:
        raise ConfigError(f"tracking_uri: '{uri}' names no server (expected {scheme}://host:port)")


def _mlflow_schemes() -> list[str]:
    """The schemes MLflow's tracking-store registry knows (its own list when it can be read)."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        return sorted(_tracking_store_registry._registry)
    except Exception:  # a future MLflow without this registry: the documented schemes
        return list(KNOWN_SCHEMES)


def _check_folder(uri: str, path: Path) -> None:
    """A file store: allowed by this MLflow (3.x refuses it unless `MLFLOW_ALLOW_FILE_STORE`),
    and a folder, or one that can be created (its nearest existing parent is a writable
    folder)."""
    if not _file_store_allowed():
        raise ConfigError(
            f"tracking_uri: '{uri}' is a folder store, which this MLflow refuses (maintenance "
            "mode) unless MLFLOW_ALLOW_FILE_STORE=true is set; use sqlite:///<path>/mlflow.db"
        )
    if path.exists():
        if not path.is_dir():
            raise ConfigError(
                f"tracking_uri: '{uri}' is a file, not a folder MLflow can store runs in"
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"tracking_uri: folder '{path}' is not writable")
        return
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"tracking_uri: cannot create the folder '{path}' ('{parent}' is not a writable folder)"
        )


def _file_store_allowed() -> bool:
    try:
        from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
    except ImportError:  # an MLflow from before the switch: folder stores work
        return True
    return bool(MLFLOW_ALLOW_FILE_STORE.get())


def _check_sqlite(uri: str) -> None:
    """`sqlite:///<file>`: SQLite creates the file, not its folder; an existing file must be an
    SQLite database. An in-memory database (`sqlite://`) would lose the run when it ends."""
    database = _url(uri).database
    if not database or database == ":memory:":
        raise ConfigError(
            f"tracking_uri: '{uri}' is an in-memory database, which keeps nothing after the "
            "run; name a file: sqlite:///<path>/mlflow.db"
        )
    path = Path(database).expanduser()
    if path.is_dir():
        raise ConfigError(f"tracking_uri: '{path}' is a folder, not an SQLite database file")
    if path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
        if head and head != SQLITE_HEADER:
            raise ConfigError(f"tracking_uri: '{path}' exists and is not an SQLite database")
        return
    folder = path.absolute().parent
    if not folder.is_dir():
        raise ConfigError(
            f"tracking_uri: folder '{folder}' of the SQLite database does not exist (SQLite "
            "creates the file, not its folder)"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"tracking_uri: folder '{folder}' is not writable")


def _check_database(uri: str) -> None:
    """A database server URI parses, and SQLAlchemy has its driver (no connection is made)."""
    url = _url(uri)
    try:
        dialect = url.get_dialect()
        load = getattr(dialect, "import_dbapi", None) or dialect.dbapi
        load()
    except ImportError as exc:
        raise ConfigError(
            f"tracking_uri: '{url.drivername}' needs its database driver, which is not "
            f"installed ({exc}); install it, or use sqlite:///<file>"
        ) from None
    except Exception as exc:  # an unknown dialect or driver name
        raise ConfigError(
            f"tracking_uri: '{url.drivername}' is not a database SQLAlchemy knows ({exc})"
        ) from None


def _url(uri: str):
    from sqlalchemy.engine.url import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(uri)
    except ArgumentError as exc:
        raise ConfigError(f"tracking_uri: '{uri}' is not a valid database URI ({exc})") from None
