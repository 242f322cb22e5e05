"""Atomic writes: a reader sees the old file or folder or the new one, never a torn one.

`atomic_write`/`atomic_write_text`/`atomic_write_bytes` put a file in place by tmp + fsync +
rename; `write_dir_atomically` does the same for a folder (`best/`, `checkpoints/step_<N>/`, an
evaluation's output), with `writing` + `replace_dir` as its parts. Every module that writes a
result a user keeps (run files, caches, forecasts, reports) writes through here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from kronos_engine.errors import CheckpointWriteError


def fsync_dir(directory: Path) -> None:
    """Make renames inside `directory` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tmp_file_for(path: Path) -> Path:
    """The temporary name `atomic_write` writes `path` under: `.<name>.tmp` beside it."""
    return path.with_name(f".{path.name}.tmp")


def move_into_place(tmp: Path, final: Path) -> None:
    """Rename `tmp` over `final` (atomic on one filesystem) and fsync the folder: for what was
    made under a temporary name by other means (a symlink, a file held open and locked)."""
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


def atomic_save(path: Path, save: Callable[[Path], Any]) -> None:
    """Replace `path` atomically with what `save(tmp)` writes to `.<name>.tmp` beside it (a
    path, for writers such as `DataFrame.to_parquet` or `np.save`): fsync, rename. A failing
    write leaves the old file intact and no temporary file."""
    path = Path(path)
    tmp = tmp_file_for(path)
    try:
        save(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path, write: Callable[[IO[str]], Any]) -> None:
    """`atomic_save` for text: `write(fh)` writes the new content to an open UTF-8 file."""

    def save(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            write(fh)

    atomic_save(path, save)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


try:  # safetensors reports I/O errors (ENOSPC, EFBIG) as its own type, not OSError
    from safetensors import SafetensorError as _SafetensorError
except ImportError:  # pragma: no cover - older safetensors
    _SafetensorError = RuntimeError

_WRITE_ERRORS = (OSError, RuntimeError, _SafetensorError)  # torch.save raises RuntimeError


@contextlib.contextmanager
def writing(target: Path, tmp: Path) -> Iterator[None]:
    """Turn a failed write into `tmp` into a `CheckpointWriteError` naming `target`, and remove
    the partial `tmp` (giving its space back). `target` itself is only ever replaced by an
    atomic rename after this block."""
    try:
        yield
    except _WRITE_ERRORS as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise CheckpointWriteError(
            f"{target}: not written, earlier checkpoints are untouched "
            f"({type(exc).__name__}: {reason})"
        ) from exc


def replace_dir(tmp: Path, final: Path, old: Path) -> None:
    """Put the finished folder `tmp` at `final` by renames only; an existing `final` (a re-save)
    is first moved aside to `old`, so a reader never sees a partly written `final`."""
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def write_dir_atomically(final: Path, fill: Callable[[Path], Any]) -> Path:
    """Create the folder `final` (or replace it) with what `fill(tmp)` writes into an empty
    `.tmp_<name>` beside it, by renames only (the old one waits in `.old_<name>`). A failing
    `fill` raises `CheckpointWriteError` and leaves `final` as it was and no temporary folder."""
    final = Path(final)
    tmp = final.with_name(f".tmp_{final.name}")
    with writing(final, tmp):
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        fill(tmp)
    replace_dir(tmp, final, final.with_name(f".old_{final.name}"))
    fsync_dir(final.parent)
    return final
