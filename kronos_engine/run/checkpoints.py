"""The checkpoint store: the on-disk format of resumable checkpoints, with no training state.

Layout of `<output_dir>/checkpoints/step_<N>/` (what goes into the files: `kronos_engine.training.resume`):
  config.json + model.safetensors  the model in the public layout (loadable by the public code);
                                   with LoRA instead adapter_config.json + adapter_model.safetensors
  optimizer.pt                     optimizer state, read back with `torch.load(weights_only=True)`
  scheduler.json                   LR scheduler state
  trainer_state.json               counters, sampler position, callback states, per-rank RNG
  config.yaml                      the resolved run config
  manifest.json                    size + sha256 of every file above; written last
A checkpoint folder is only ever created by renaming a finished temporary folder
(`write_checkpoint`), and a folder whose manifest does not match its files is reported and
skipped by `find_resume_checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kronos_engine.errors import ResumeError
from kronos_engine.fsio import write_dir_atomically
from kronos_engine.layout import RunLayout

log = logging.getLogger("kronos_engine")

STEP_DIR = re.compile(r"^step_(\d+)$")
MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.json"
FORMAT_VERSION = 1


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step}"


def write_json(path: Path, obj: Any) -> None:
    """A JSON file of a checkpoint folder being written (the folder's rename makes it atomic)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


# ---------------------------------------------------------------- integrity


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path) -> None:
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name != MANIFEST)
    entries = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    write_json(directory / MANIFEST, {"format_version": FORMAT_VERSION, "files": entries})


def verify_checkpoint(directory: Path) -> None:
    """Raise `ResumeError` unless every file listed in the manifest is present and intact."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ResumeError(f"{directory}: no {MANIFEST} (incomplete or not a checkpoint)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ResumeError(f"{manifest_path}: unreadable manifest ({exc})") from None
    for name, meta in files.items():
        path = directory / name
        if not path.is_file():
            raise ResumeError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size != meta["size"]:
            raise ResumeError(
                f"{path}: size {path.stat().st_size} != {meta['size']} in manifest (truncated?)"
            )
        if _sha256(path) != meta["sha256"]:
            raise ResumeError(f"{path}: checksum does not match the manifest (corrupted)")


# ---------------------------------------------------------------- write / discover / prune


def write_checkpoint(
    root: Path, step: int, write_files: Callable[[Path], Any], keep_last: int
) -> Path:
    """`root/step_<step>`, created (or replaced) atomically: `write_files(tmp)` fills an empty
    temporary folder, the manifest is written last, then the folder is renamed into place and
    all but the newest `keep_last` checkpoints are removed. A failed write raises
    `CheckpointWriteError` with the earlier checkpoints intact."""

    def fill(tmp: Path) -> None:
        write_files(tmp)
        write_manifest(tmp)

    final = write_dir_atomically(step_dir(root, step), fill)
    prune_checkpoints(root, keep_last)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under `root`, oldest step first (temporary folders excluded)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def find_resume_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or the newest intact one under an output dir (falling back)."""
    path = Path(path)
    if not path.exists():
        raise ResumeError(f"resume: '{path}' does not exist")
    if (path / MANIFEST).exists() or STEP_DIR.match(path.name):
        verify_checkpoint(path)
        return path
    layout = RunLayout(path)
    root = layout.checkpoints if layout.checkpoints.is_dir() else path
    candidates = list_checkpoints(root)
    if not candidates:
        raise ResumeError(f"resume: no checkpoint folder (step_<N>) under '{root}'")
    for candidate in reversed(candidates):
        try:
            verify_checkpoint(candidate)
            return candidate
        except ResumeError as exc:
            log.warning("skipping damaged checkpoint: %s; trying the previous one", exc)
    raise ResumeError(f"resume: every checkpoint under '{root}' is damaged")


def prune_checkpoints(root: Path, keep_last: int) -> None:
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def read_trainer_state(directory: Path) -> dict[str, Any]:
    return json.loads((directory / TRAINER_STATE).read_text(encoding="utf-8"))
