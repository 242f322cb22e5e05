"""The process shell every command shares: logging, and one line + an exit code for each way a
command can end.

Exit codes: 0 done; 2 a `UserError` reached the shell (fix the input: nothing was trained or
written); 1 a `TrainingError` or an `OSError` (a started run failed, or a disk/permission
problem, named in the line); 128+N a signal. No command lists error classes of its own: the two
families live in `kronos_engine.errors`.
"""

from __future__ import annotations

import logging
import signal
import sys
import time

from kronos_engine import distenv
from kronos_engine.errors import TrainingError, UserError
from kronos_engine.run import outputs as run_outputs

EXIT_USAGE = 2  # bad config / input: nothing was trained
EXIT_FAILED = 1  # training failed (non-finite loss, empty validation, an unwritable output dir)
PEER_REPORT_GRACE_S = 15.0  # how long another rank leaves a usage error to rank 0 (see below)


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO if distenv.is_rank0() else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def report_error(exc: BaseException, same_on_every_rank: bool = False) -> None:
    """One line from rank 0. Once the process group exists another rank reports too (prefixed
    with its rank): its error may be its own (its data, disk or files), and rank 0 would then
    only see a closed connection. Errors from all-reduced values (`same_on_every_rank`) and
    config errors (before the process group) come from rank 0 alone, as does an error marked
    `same_on_every_rank` (a peer raising the line rank 0 reports: the data build's)."""
    same_on_every_rank = same_on_every_rank or getattr(exc, "same_on_every_rank", False)
    message = " ".join(str(exc).split()) or type(exc).__name__
    if distenv.is_rank0():
        _say(f"error: {message}")
    elif not same_on_every_rank and _distributed_started():
        _say(f"error: rank {distenv.rank()}: {message}")
    elif distenv.world_size() > 1 and not isinstance(exc, KeyboardInterrupt):
        _leave_the_report_to_rank0(message, same_on_every_rank)


def _say(line: str) -> None:
    """One write for the whole line: print() writes the text and its newline apart, and with
    PYTHONUNBUFFERED each is its own write, so two ranks' lines could interleave mid-line."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _leave_the_report_to_rank0(message: str, same_on_every_rank: bool) -> None:
    """An error rank 0 reports (one every rank shares, or a usage error before the process
    group: rank 0 reads the same config). The launcher stops every worker once one exits, so
    exiting at once could stop rank 0 before it prints (a slow rank 0 then left no line at
    all): wait for that stop instead. If it never comes, rank 0 did not fail: a usage error
    is then this rank's own, and said with its rank."""
    time.sleep(PEER_REPORT_GRACE_S)
    if not same_on_every_rank:
        _say(f"error: rank {distenv.rank()}: {message}")


def _distributed_started() -> bool:
    import torch.distributed as dist  # only once a command failed: the shell stays cheap

    return dist.is_available() and dist.is_initialized()


def release_output_dirs() -> None:
    """Give back every output dir this process locked (a failed run leaves nothing behind)."""
    run_outputs.release_all()


def close_executor(executor) -> None:
    """After an error (no barrier: a peer may be gone); a no-op after a graceful close."""
    if executor is not None:
        executor.close(graceful=False)


def exit_code_for(exc: BaseException) -> int:
    """Report a known failure as one line and map it to the exit code; re-raise the rest."""
    if isinstance(exc, SystemExit):  # --help
        return int(exc.code or 0)
    if isinstance(exc, KeyboardInterrupt):
        report_error(KeyboardInterrupt("interrupted"), same_on_every_rank=True)
        return 128 + signal.SIGINT
    if isinstance(exc, UserError):
        report_error(exc)
        return EXIT_USAGE
    if isinstance(exc, TrainingError):
        report_error(exc, same_on_every_rank=True)
        return EXIT_FAILED
    if isinstance(exc, OSError):  # disk full, read-only or missing output dir: names the path
        report_error(exc)
        return EXIT_FAILED
    raise exc
