"""Where a command may write its output: the one rule of predict, evaluate, backtest and plot.

An output location is either new, or something the same command wrote before; never a run
folder or an experiment dir, never the input data, never anything else that exists.

* A folder output (`evaluate --output`, `backtest --output`, `predict --plot`) may be new, an
  empty folder, or one an earlier run of the same command wrote: it holds the marker
  `.kronos_output.json` naming the command (`write_output_dir` writes it; a plot folder,
  which lists only its pictures, has it beside it as `.<name>.kronos_output.json`, naming the
  folder's inode and files), or, for folders written before the marker existed, only that
  command's own file names. It is written into a staging folder beside it and swapped into
  place by renames (`fsio.replace_dir`), so its files appear together or not at all.
* A file output (`predict --output`, `plot --output`) may be new or an existing file that is
  not part of a run (its `config.yaml`, `metrics.jsonl`, `best/` ...) and not the input data.
* Neither may lie inside a run's own files or folders, inside the input data, or under a path
  that is a file; a folder output may not hold a run or the input.

A violation is the command's own `UserError` (`error=`), one line naming the flag, the path and
what is allowed, raised before any work, so nothing that existed is touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kronos_engine.fsio import atomic_write_text, fsync_dir, replace_dir
from kronos_engine.layout import CONFIG_FILE, LOCK_NAME, RunLayout

MARKER = ".kronos_output.json"

# What a run folder holds (`RunLayout`): any of these makes a folder a run folder.
_RUN_NAMES = tuple(p.name for p in RunLayout(".").outputs) + (CONFIG_FILE, LOCK_NAME)

PathLike = str | os.PathLike[str]


def _real(path: PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def run_folder_names(folder: Path) -> list[str]:
    """The run files and folders `folder` holds (empty: it is no run folder)."""
    return [name for name in _RUN_NAMES if os.path.lexists(folder / name)]


def _runs_below(folder: Path, depth: int = 2) -> Path | None:
    """A run folder among the sub-folders of `folder` (an experiment dir holds one per stage;
    a folder of experiments one level deeper)."""
    try:
        children = [c for c in os.scandir(folder) if c.is_dir(follow_symlinks=False)]
    except OSError:
        return None
    for child in children:
        if run_folder_names(Path(child.path)):
            return Path(child.path)
    if depth > 1:
        for child in children:
            found = _runs_below(Path(child.path), depth - 1)
            if found is not None:
                return found
    return None


def _inside_run(path: Path) -> Path | None:
    """The run file or folder `path` is, or lies in (`<run>/best/...`, `<run>/config.yaml`)."""
    for parent in path.parents:
        rel = path.relative_to(parent).parts
        if rel and rel[0] in _RUN_NAMES and run_folder_names(parent):
            return parent / rel[0]
    return None


def beside_marker(folder: PathLike) -> Path:
    """Where the marker of a folder whose listing must hold only its own files lives (the plot
    folder of predict): `.<name>.kronos_output.json` beside it."""
    folder = Path(folder)
    return folder.with_name(f".{folder.name}{MARKER}")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def marker_command(folder: Path) -> str | None:
    """The command named by `folder`'s marker (None without a readable one): the marker in the
    folder, or one beside it that names this very folder (its inode) and every file in it."""
    inside = _read_json(folder / MARKER).get("command")
    if inside is not None:
        return str(inside)
    beside = _read_json(beside_marker(folder))
    try:
        info = os.stat(folder)
        same = [beside.get("device"), beside.get("inode")] == [info.st_dev, info.st_ino]
        own = same and set(os.listdir(folder)) <= set(beside.get("files") or ())
    except OSError:
        return None
    return str(beside.get("command")) if own and beside.get("command") else None


class _Check:
    def __init__(self, flag: str, command: str, error: type[Exception], allowed: str) -> None:
        self.flag, self.command, self.error, self.allowed = flag, command, error, allowed

    def fail(self, path: PathLike, what: str) -> None:
        raise self.error(f"{self.flag}: '{path}' {what}; {self.allowed}")

    def common(self, given: PathLike, inputs: Iterable[PathLike]) -> Path:
        """The checks of every output: not under a file, not in a run, not in the input."""
        path = _real(given)
        for parent in path.parents:
            if os.path.lexists(parent):
                if not parent.is_dir():
                    self.fail(given, f"lies under '{parent}', which is a file, not a folder")
                break
        run_part = _inside_run(path)
        if run_part is not None:
            self.fail(given, f"is or lies in '{run_part}', part of a run folder")
        for item in inputs:
            if item is None or not str(item):
                continue
            source = _real(item)
            if _within(path, source):
                self.fail(given, f"is or lies in the input '{item}'")
        return path


def check_output_dir(
    given: PathLike,
    *,
    flag: str,
    command: str,
    error: type[Exception],
    inputs: Iterable[PathLike | None] = (),
    own_names: tuple[str, ...] = (),
) -> Path:
    """Raise `error` unless `given` may be (re)written as `command`'s output folder: a new or
    empty folder, or one an earlier `command` wrote: its marker, or (folders from before the
    marker) only `own_names`, the file names it writes, the first of them among them.
    `inputs`: what the command reads (the run, the data, models), which the folder may not be,
    lie in, or hold."""
    allowed = (
        f"give a new folder, an empty one, or one an earlier {command} wrote (marked by {MARKER})"
    )
    check = _Check(flag, command, error, allowed)
    inputs = [i for i in inputs if i is not None and str(i)]
    path = _real(given)
    if os.path.islink(given):
        check.fail(given, "is a symbolic link")
    if path.is_dir():
        found = run_folder_names(path)
        if found:
            check.fail(given, f"is a run folder (it holds {', '.join(found)})")
        below = _runs_below(path)
        if below is not None:
            check.fail(given, f"holds the run folder '{below}'")
    check.common(given, inputs)
    if not os.path.lexists(path):
        return Path(given)
    if not path.is_dir():
        check.fail(given, "is an existing file, not a folder")
    for item in inputs:
        if _within(_real(item), path):
            check.fail(given, f"holds the input '{item}'")
    names = set(os.listdir(path))
    marked = marker_command(path)
    if marked is not None and marked != command:
        check.fail(given, f"was written by {marked}, not {command}")
    if marked == command:
        for root, _dirs, _files in os.walk(path):
            if run_folder_names(Path(root)):
                check.fail(given, f"holds the run folder '{root}'")
        return Path(given)
    legacy = bool(own_names) and own_names[0] in names and names <= set(own_names)
    if not names or legacy:
        return Path(given)
    check.fail(given, f"exists and was not written by {command}")
    raise AssertionError  # pragma: no cover - fail() raised


def check_output_file(
    given: PathLike,
    *,
    flag: str,
    command: str,
    error: type[Exception],
    inputs: Iterable[PathLike | None] = (),
) -> Path:
    """Raise `error` unless `given` may be (re)written as `command`'s output file: a new file,
    or an existing one that is not part of a run nor any of `inputs` (nor inside one)."""
    allowed = "give a new file, or an earlier output file that is not a run's or the input's"
    check = _Check(flag, command, error, allowed)
    path = check.common(given, [i for i in inputs if i is not None and str(i)])
    if os.path.lexists(path) and not path.is_file():
        check.fail(given, "is an existing folder, not a file")
    return Path(given)


def write_marker(folder: Path, command: str) -> None:
    """`folder/.kronos_output.json`: written by `command` (what lets it replace the folder)."""
    atomic_write_text(Path(folder) / MARKER, json.dumps({"command": command}) + "\n")


def _write_beside_marker(folder: Path, command: str) -> None:
    info = os.stat(folder)
    record = {
        "command": command,
        "folder": folder.name,
        "device": info.st_dev,
        "inode": info.st_ino,
        "files": sorted(os.listdir(folder)),
    }
    atomic_write_text(beside_marker(folder), json.dumps(record) + "\n")


def write_output_dir(
    final: PathLike, command: str, fill: Callable[[Path], Any], *, marker_beside: bool = False
) -> Path:
    """Create or replace the folder `final` with what `fill(staging)` writes into an empty
    staging folder `.<name>.tmp` beside it, plus the marker (in it, or with `marker_beside`
    beside it, for a folder that must list only its own files): by renames only, so a reader
    (or a kill at any point) sees the old folder whole or the new one whole, never a mix."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        fill(staging)
        if not marker_beside:
            write_marker(staging, command)
        replace_dir(staging, final, final.with_name(f".{final.name}.old"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if marker_beside:
        _write_beside_marker(final, command)
    fsync_dir(final.parent)
    return final


_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def safe_file_names(names: Iterable[str], suffix: str) -> dict[str, str]:
    """name -> a file name of it that stays in its folder: every character outside
    `[A-Za-z0-9._=+-]` (a `/`, a `\\`, spaces ...) becomes `_`, a leading `.` too (no `..`, no
    hidden file), and names that end up alike (also in another case) get `-2`, `-3` ...; names
    that are safe as they are keep them."""
    names = list(dict.fromkeys(str(n) for n in names))
    out: dict[str, str] = {}
    taken: set[str] = set()
    cleaned = {}
    for name in names:
        stem = _UNSAFE.sub("_", name) or "_"
        cleaned[name] = "_" + stem[1:] if stem.startswith(".") else stem
    # Names safe as they are first, so a cleaned name never takes a real symbol's file.
    for name in sorted(names, key=lambda n: cleaned[n] != n):
        stem = candidate = cleaned[name]
        n = 1
        while (candidate + suffix).lower() in taken:
            n += 1
            candidate = f"{stem}-{n}"
        taken.add((candidate + suffix).lower())
        out[name] = candidate + suffix
    return {name: out[name] for name in names}
