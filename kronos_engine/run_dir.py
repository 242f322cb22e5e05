"""The run folder: its layout (`RunLayout`, the one place that names its files), its atomic
writes, which run may write into an output dir, and the lock that makes that exclusive.

Layout of `<output_dir>/` (`RunLayout(output_dir)`):
  config.yaml        `.config`            the resolved run config (written atomically)
  checkpoints/       `.checkpoints`       resumable `step_<N>/` folders (see `checkpoint_store`)
  best/              `.best`              the best validated model, public layout
  metrics.jsonl      `.metrics`           one record per line
  summary.json       `.summary`           how the run ended
  frozen_tokenizer/  `.frozen_tokenizer`  predictor runs: the tokenizer they read
  .lock              `.lock`              held while the run runs
An experiment dir holds one run per stage: `stage_run(exp_dir, "tokenizer").best` is the
experiment's tokenizer (`experiment_tokenizer(exp_dir)`).

Atomic writes: `atomic_write`/`atomic_write_text` put a file in place by tmp + fsync + rename
(a reader sees the old file or the new one, never a torn one); `write_dir_atomically` does the
same for a folder (`best/`, `checkpoints/step_<N>/`), with `writing` + `replace_dir` as its parts.

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
import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kronos_engine.config import ConfigError, TrainConfig
from kronos_engine.errors import CheckpointWriteError

BEST_DIR = "best"
CHECKPOINTS_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
FROZEN_TOKENIZER_DIR = "frozen_tokenizer"
LOCK_NAME = ".lock"


@dataclass(frozen=True)
class RunLayout:
    """Where each file of the run in `root` lives. Every module asks this for a run's paths."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def best(self) -> Path:
        return self.root / BEST_DIR

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY_FILE

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def frozen_tokenizer(self) -> Path:
        return self.root / FROZEN_TOKENIZER_DIR

    @property
    def lock(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def outputs(self) -> tuple[Path, ...]:
        """What a run writes besides its config: a folder holding any of these holds a run."""
        return (self.checkpoints, self.best, self.metrics, self.summary, self.frozen_tokenizer)


def stage_run(exp_dir: str | os.PathLike[str], train_type: str) -> RunLayout:
    """The run of one stage (`tokenizer`, `predictor`) of an experiment dir."""
    return RunLayout(Path(exp_dir) / train_type)


def experiment_tokenizer(exp_dir: str | os.PathLike[str]) -> Path:
    """The experiment's fine-tuned tokenizer: `<exp_dir>/tokenizer/best`."""
    return stage_run(exp_dir, "tokenizer").best


class RunLockedError(ConfigError):
    """Another live process holds the output dir."""


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


# ---------------------------------------------------------------------------- atomic writes


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


def atomic_write(path: Path, write: Callable[[IO[str]], Any]) -> None:
    """Replace the text file `path` with what `write(fh)` writes, atomically: into a temporary
    file, fsync, rename. A failing write leaves the old file intact and no temporary file."""
    path = Path(path)
    tmp = tmp_file_for(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def write_config(path: Path, cfg: TrainConfig) -> None:
    """`config.yaml`: the resolved config, written atomically (a run's or a checkpoint's)."""
    import yaml

    atomic_write(path, lambda fh: yaml.safe_dump(cfg.to_dict(), fh, sort_keys=False))


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


def is_writer() -> bool:
    """Rank 0 (or no torchrun): the process that writes the run's files."""
    return int(os.environ.get("RANK", "0")) == 0


def holds(output_dir: str | os.PathLike[str]) -> bool:
    return os.path.abspath(Path(output_dir)) in _HELD


atexit.register(release_all)
