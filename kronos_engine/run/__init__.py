"""Run folders: who may write into an output dir and the lock that makes it exclusive
(`outputs`), the resumable checkpoint store (`checkpoints`) and reading a finished run
(`finished`).

The face also re-exports the run folder's names (`kronos_engine.layout`) and atomic writes
(`kronos_engine.fsio`), the foundations every run-folder user needs beside these, so that
`from kronos_engine import run` reaches the whole run folder in one name.
"""

from kronos_engine.fsio import (
    atomic_write,
    atomic_write_text,
    replace_dir,
    tmp_file_for,
    write_dir_atomically,
)
from kronos_engine.layout import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    FROZEN_TOKENIZER_DIR,
    LOCK_NAME,
    METRICS_FILE,
    SUMMARY_FILE,
    RunLayout,
    experiment_tokenizer,
    stage_run,
)
from kronos_engine.run.outputs import (
    acquire,
    check_output_dir,
    clear_previous_run,
    hold,
    holds,
    previous_run_outputs,
    release,
    release_all,
    resumed_run_dir,
)

__all__ = [
    "BEST_DIR", "CHECKPOINTS_DIR", "CONFIG_FILE", "FROZEN_TOKENIZER_DIR", "LOCK_NAME",
    "METRICS_FILE", "SUMMARY_FILE", "RunLayout", "acquire", "atomic_write", "atomic_write_text",
    "check_output_dir", "clear_previous_run", "experiment_tokenizer", "hold", "holds",
    "previous_run_outputs", "release", "release_all", "replace_dir", "resumed_run_dir",
    "stage_run", "tmp_file_for", "write_dir_atomically",
]  # fmt: skip
