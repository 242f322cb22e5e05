"""`--nprocs=N`: N local DDP processes without typing torchrun.

The parent (after the config passed its checks) starts the workers through torch's own elastic
launcher (`elastic_launch`, what `torchrun --standalone --nproc_per_node=N` runs: a c10d
rendezvous on 127.0.0.1 with a free port). Each worker runs the normal entry
(`python -m kronos_engine.cli.worker train|pipeline|predict|evaluate ARGS`: that command's `main`)
with the torchrun environment, so it is one DDP rank (predict/evaluate: one shard, `cli.processes`).

Exit codes: the parent returns the workers' code (0; 1 for a failed run; 2 for a usage error;
128+signal for a preempted run). A SIGTERM/SIGINT to the parent is forwarded by the elastic
agent to every worker's process group; the workers finish the step, checkpoint and exit, and the
parent returns 128+signal.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid
from collections.abc import Sequence

from kronos_engine import distenv
from kronos_engine.errors import UsageError

log = logging.getLogger("kronos_engine")

FLAG = "--nprocs"
WORKER = "kronos_engine.cli.worker"  # the module each worker runs (`python -m`)
HELP = (
    "start N local processes (DDP, one per device) through torch's elastic launcher, as "
    "`torchrun --standalone --nproc_per_node=N` would; not a config key, and not valid under "
    "torchrun (default: 1, this process)"
)


def positive_int(flag: str, raw: str | None) -> int:
    """A count flag's value (`--nprocs`, `--workers`) as an integer >= 1, or one line naming it."""
    try:
        value = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise UsageError(f"{flag}: expected a positive integer, got {raw!r}")
    return value


def pop_nprocs(argv: Sequence[str]) -> tuple[int | None, list[str]]:
    """`--nprocs=N` / `--nprocs N` taken out of argv (the last one wins); None when absent.
    Raises `cli.UsageError` for a value that is not a positive integer."""

    rest: list[str] = []
    raw: str | None = None
    given = False
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == FLAG:
            given = True
            raw = args[i + 1] if i + 1 < len(args) else None
            i += 2
            continue
        if arg.startswith(FLAG + "="):
            given = True
            raw = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    if not given:
        return None, rest
    nprocs = positive_int(FLAG, raw)
    if distenv.under_launcher():
        raise UsageError(
            f"{FLAG}: not under torchrun, which already started the processes "
            "(use torchrun's --nproc_per_node, or drop torchrun)"
        )
    return nprocs, rest


def launch(command: str, argv: Sequence[str], nprocs: int) -> int:
    """Run `command` (a `cli.worker.COMMANDS` name) with `argv` in `nprocs` local processes; returns
    the exit code for the parent."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if "OMP_NUM_THREADS" not in os.environ:  # as torchrun does: N processes share the cores
        os.environ["OMP_NUM_THREADS"] = "1"
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nprocs,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # port 0: the agent's store binds a free port
        max_restarts=0,
        monitor_interval=0.1,
    )
    log.info("starting %d processes (%s)", nprocs, command)
    try:
        elastic_launch(config, sys.executable)("-m", WORKER, command, *argv)
    except ChildFailedError as exc:
        return failure_exit_code([(f.timestamp, f.exitcode) for f in exc.failures.values()])
    except SignalException as exc:  # the agent forwarded it to the workers and waited
        return 128 + int(exc.sigval)
    return 0


def failure_exit_code(failures: list[tuple[int, int]]) -> int:
    """The job's exit code from its failed workers' (timestamp, exit status): the earliest
    failure. Of simultaneous ones (the same second) not a worker the agent stopped (SIGTERM,
    143) and then the highest code: a peer of the failed rank often fails too, with 1, on the
    lost connection, while the rank that failed first says 2 for a user error."""
    first = min(t for t, _ in failures)
    codes = [exit_code(c) for t, c in failures if t == first]
    own = [c for c in codes if c != 128 + signal.SIGTERM]
    return max(own or codes)


def exit_code(code: int) -> int:
    """A worker's exit status as a shell reports it (killed by signal S: 128+S)."""
    return 128 - code if code < 0 else code
