"""`--nprocs N` for the commands that forecast (`scripts/predict.py`, `scripts/evaluate.py`).

The parent runs the command's checks (flags, output rules, models, data) once, on the CPU,
then starts N workers through the one launcher `cli.launch` (torch's elastic agent, as
`torchrun --standalone`); under torchrun the command joins the job as it is. Each worker runs
the command's normal entry: it plans the same batches, runs its share (`forecasting.shards`:
batch b on rank b % N, one GPU per rank with `--device cuda`, else the CPU), and rank 0 gets
every result through the process group's `gather_object` (gloo; the results are pickled in
memory between the job's own processes, never written to disk) and writes the outputs alone.
A user error found by the workers is found by every rank alike, before the process group
exists: rank 0 reports it in one line and the agent stops the job.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from kronos_engine import distenv
from kronos_engine.cli.launch import FLAG, launch, pop_nprocs
from kronos_engine.errors import ForecastError
from kronos_engine.forecasting.shards import Shard

TIMEOUT_S = 3600  # a rank waits this long for a peer's batch (a slow forecast, not a hang)


def launch_if_asked(
    command: str,
    argv: Sequence[str] | None,
    parse: Callable[[list[str]], argparse.Namespace],
    check: Callable[[argparse.Namespace], Any],
    handoff: Callable[[Any], dict[str, str]] | None = None,
) -> tuple[int | None, argparse.Namespace | None]:
    """`(exit code, None)` after running `command` in `--nprocs` workers (its `check` passed
    first, here, with `--device cpu`), else `(None, args)` for this process to run.
    `handoff`: the environment that hands what the check prepared (the data store) to the
    workers, which then map it instead of preparing it again; it lives until they end."""
    nprocs, rest = pop_nprocs(sys.argv[1:] if argv is None else argv)
    args = parse(rest)
    if nprocs is None or nprocs == 1:
        return None, args
    check_devices(args.device, nprocs)
    on_cpu = copy.copy(args)
    on_cpu.device = "cpu"  # the checks load the models: not onto a GPU a worker will use
    checked = check(on_cpu)  # held until the workers end: a temporary store lives as long
    with _environment(handoff(checked) if handoff is not None else {}):
        return launch(command, rest, nprocs), None


@contextlib.contextmanager
def _environment(entries: dict[str, str]) -> Iterator[None]:
    """`entries` in this process's environment (the workers inherit it) for the block."""
    before = {name: os.environ.get(name) for name in entries}
    os.environ.update(entries)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_devices(device: str | None, nprocs: int) -> None:
    """One GPU per rank: `--device cuda` (or none, with GPUs) needs `nprocs` of them; an
    explicit `cuda:K` would put every rank on one GPU."""
    wants_cuda = device is None and torch.cuda.is_available() or str(device).startswith("cuda")
    if not wants_cuda:
        return
    if device is not None and device != "cuda":
        raise ForecastError(
            f"--device: '{device}' with {FLAG} {nprocs}: give 'cuda' (rank r uses cuda:r) or 'cpu'"
        )
    count = torch.cuda.device_count()
    if nprocs > count:
        raise ForecastError(
            f"{FLAG}: {nprocs} processes need {nprocs} GPUs (one per rank), this machine has "
            f"{count}; lower {FLAG} or pass --device cpu"
        )


def rank_device(device: torch.device) -> torch.device:
    """The device of this rank: a job's rank r forecasts on cuda:r (its local rank)."""
    if device.type == "cuda" and distenv.launched_by_torchrun():
        return torch.device("cuda", distenv.local_rank())
    return device


def join() -> Shard | None:
    """This process's `Shard` of the launcher's job (None when it is the only process); joins
    the gloo process group the first time."""
    if not distenv.launched_by_torchrun():
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=TIMEOUT_S))
    return Shard(dist.get_rank(), dist.get_world_size(), _gather)


def finish(shard: Shard | None) -> None:
    """After a rank's last collective: wait for every rank (rank 0 has written), so that no
    rank tears the group down while a peer still talks to it."""
    if shard is not None and shard.world > 1:
        import torch.distributed as dist

        dist.barrier()


def leave() -> None:
    """Leave the process group (if this process joined one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _gather(obj: Any) -> list[Any] | None:
    import torch.distributed as dist

    main = dist.get_rank() == 0
    out: list[Any] | None = [None] * dist.get_world_size() if main else None
    dist.gather_object(obj, out, dst=0)
    return out
