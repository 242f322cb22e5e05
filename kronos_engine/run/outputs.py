"""Which run may write into an output dir, and the lock that makes that exclusive (the names of
a run folder's files are in `kronos_engine.layout`, its atomic writes in `kronos_engine.fsio`).

* A fresh run never writes into a folder that already holds a run (`--resume` it, or
  `--overwrite=true`).
* A resumed run continues in its own folder, or in a new one that holds no run yet (a fork):
  `--resume=A` with `output_dir` pointing at another run B would replace B's files with A's,
  so it is refused.
* A run holds its output dir exclusively while it runs: `<output_dir>/.lock`, locked with a
  POSIX record lock (`lockf`) and naming the holder (pid, host, start time). The kernel drops
  the lock when its process dies, so a lock left by a killed run never blocks `--resume`; a
  second run started into the same folder fails at once with one line naming the holder.
  Not `flock`: forked DataLoader workers would share an `flock` and keep it alive after their
  trainer was killed; record locks belong to the process alone.

Only the process that writes (rank 0 under torchrun) takes the lock.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import errno
import fcntl
import json
import os
import shutil
import socket
import sys
from pathlib import Path

from kronos_engine.config import TrainConfig
from kronos_engine.distenv import is_writer
from kronos_engine.errors import ConfigError, RunLockedError
from kronos_engine.layout import CHECKPOINTS_DIR, RunLayout


def previous_run_outputs(output_dir: Path) -> list[str]:
    return [p.name for p in RunLayout(output_dir).outputs if p.exists()]


def clear_previous_run(output_dir: Path) -> None:
    """Remove an earlier run's outputs (a fresh run with `overwrite`); its config stays until
    the new one replaces it."""
    for path in RunLayout(output_dir).outputs:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def resumed_run_dir(resume: str | os.PathLike[str]) -> Path | None:
    """The run folder a `resume` path belongs to, when it is one: an output dir holding
    `checkpoints/`, or a `checkpoints/step_N` folder inside one. None for anything else (a bare
    checkpoint folder, a missing path; `find_resume_checkpoint` reports those)."""
    path = Path(resume)
    if RunLayout(path).checkpoints.is_dir():
        return path
    if path.name == CHECKPOINTS_DIR and path.is_dir():
        return path.parent
    if path.parent.name == CHECKPOINTS_DIR and path.is_dir():
        return path.parent.parent
    return None


def _same_dir(a: Path, b: Path) -> bool:
    return os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b)) or (
        a.exists() and b.exists() and a.resolve() == b.resolve()
    )


def check_output_dir(cfg: TrainConfig) -> None:
    """A fresh run never mixes with, or silently replaces, an earlier run's outputs, and a
    resumed run never writes into another run's folder."""
    out = cfg.resolved_output_dir
    if cfg.resume:
        owner = resumed_run_dir(cfg.resume)
        if owner is not None and _same_dir(owner, out):
            return  # continuing the run in its own folder
        if previous_run_outputs(out):  # even with overwrite: a resume never clears a folder
            whose = f"a checkpoint of run '{owner}'" if owner is not None else "a checkpoint"
            fix = (
                f"--output_dir={owner} (or --config {RunLayout(owner).config})"
                if owner
                else ("an output_dir that holds no run")
            )
            raise ConfigError(
                f"resume: '{cfg.resume}' is {whose}, but output_dir '{out}' holds another "
                f"run; a resumed run continues in its own folder or a new one: pass {fix}, "
                f"or start a fresh run into '{out}' without --resume"
            )
        return
    found = previous_run_outputs(out)
    if found and not cfg.overwrite:
        raise ConfigError(
            f"output_dir: '{out}' already holds a run ({', '.join(found)}); continue it with "
            f"--resume={out}, choose "
            f"another --output_dir, or pass --overwrite=true to replace it"
        )


# ---------------------------------------------------------------------------- the lock

_HELD: dict[str, tuple[int, Path, list[Path]]] = {}  # abspath -> (fd, lock file, dirs made)


def _holder_text(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another process"
    return (
        f"pid {info.get('pid')} on {info.get('host')} (started {info.get('started')}: "
        f"{info.get('command')})"
    )


def acquire(output_dir: str | os.PathLike[str]) -> None:
    """Hold `output_dir` for this process (idempotent). Creates the folder if needed; raises
    `RunLockedError` naming the holder when another live process holds it."""
    out = Path(output_dir)
    key = os.path.abspath(out)
    if key in _HELD:
        return
    created = [p for p in [out, *out.absolute().parents] if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLayout(out).lock
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunLockedError(
                f"output_dir: '{out}' is in use by a running training run, "
                f"{_holder_text(lock)}; wait for it to finish or choose another --output_dir"
            ) from None
        # The holder may have removed the file between our open and lockf: lock the new one.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv) or "python",
    }
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    _HELD[key] = (fd, lock, created)


def hold(cfg: TrainConfig) -> bool:
    """Rank 0 takes the run's output dir (held until `release`), then every rank checks it
    again: another run may have finished in between. True when this call took the lock (the
    caller gives it back if what it does next fails)."""
    out = cfg.resolved_output_dir
    taken = is_writer() and not holds(out)
    if is_writer():
        acquire(out)
    try:
        check_output_dir(cfg)
    except BaseException:
        if taken:
            release(out)
        raise
    return taken


def release(output_dir: str | os.PathLike[str]) -> None:
    """Give the folder back: the lock file is removed, and a folder this process created is
    removed again when nothing was written into it (a run that failed early leaves nothing)."""
    key = os.path.abspath(Path(output_dir))
    held = _HELD.pop(key, None)
    if held is None:
        return
    fd, lock, created = held
    try:
        lock.unlink()
    except FileNotFoundError:
        pass
    os.close(fd)  # unlink first: a waiting process then re-checks the inode and retries
    for folder in created:  # deepest first; stops at the first one that holds anything
        try:
            folder.rmdir()
        except OSError:
            break


def release_all() -> None:
    for key in list(_HELD):
        release(key)


def holds(output_dir: str | os.PathLike[str]) -> bool:
    return os.path.abspath(Path(output_dir)) in _HELD


atexit.register(release_all)
