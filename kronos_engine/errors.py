"""Every error the engine raises on purpose, in one place, so that every layer can raise and the
command-line shell can tell them apart without importing the layers.

Two families decide the exit code of every command (`kronos_engine.cli.shell`):

* `UserError`: "fix your input" (a config key, a flag, a data file, a checkpoint folder). One line
  naming the key/file/row and what is allowed, exit code 2; nothing was trained or written.
* `TrainingError`: a started run cannot go on (non-finite loss, empty validation). One line,
  exit code 1; the last written checkpoint is intact.

Each class keeps the built-in base it always had (`ValueError`, `KeyError`, `OSError` ...), so
code that caught those still catches them.
"""

from __future__ import annotations


class UserError(Exception):
    """Input the user must fix; the message is one line naming what and what is allowed."""


class ConfigError(UserError, ValueError):
    """A config key has a wrong value; the message names the key and what is allowed."""


class UsageError(UserError):
    """A command-line mistake argparse found (bad flag syntax, unknown flag)."""


class RegistryError(UserError, KeyError):
    """An unknown name or an unimportable `module:Class`; the message says what is available."""

    def __str__(self) -> str:  # KeyError quotes its message; we want one plain line
        return str(self.args[0])


class RunLockedError(ConfigError):
    """Another live process holds the output dir."""


class ConfigLineError(ConfigError):
    """A config file value of the wrong type, "<line>: <key>: ..." (the loader adds the file
    name in front): raised where the file's lines are known, named where the file is."""


class DataError(UserError, ValueError):
    """Bad or unusable input data.

    Messages are one line and name the file, symbol, row (1-based data row, or the timestamp)
    and key involved, plus what is allowed, so a user can fix the input without a debugger.
    """


class CheckpointError(UserError, ValueError):
    """A checkpoint directory is missing, incomplete, corrupt or does not fit the model."""


class ResumeError(UserError, RuntimeError):
    """A checkpoint cannot be used for resuming; the message names the folder and the problem."""


class ForecastError(UserError, ValueError):
    """Input that cannot be forecast; the message names the series, column or folder."""


class EvaluationError(UserError, ValueError):
    """A bad argument or input of the evaluation; one line, exit code 2."""


class BacktestError(UserError, ValueError):
    """Bad backtest input (forecasts, flags, qlib data); one line, exit code 2."""


class PlotError(UserError):
    """A run cannot be plotted (no metrics file, no records, no matplotlib); one line."""


class TrainingError(RuntimeError):
    """A started run cannot go on (the message names the step and what to change)."""


class NonFiniteError(TrainingError, FloatingPointError):
    """A NaN/inf loss or gradient with `nan_policy=stop`; the last written checkpoint is intact."""


class EmptyValidationError(TrainingError):
    """No validation sample on any rank: a metric of 0.0 would be meaningless."""


class TrialFailed(TrainingError):
    """A sweep trial's run ended without a result: Optuna records it as FAIL, the sweep goes on."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, read-only); the earlier ones are
    intact. The message names the folder and the underlying error in one line."""


def did_you_mean(name: str, known) -> str:
    """`did you mean 'x'?` for the closest of `known` to a mistyped `name`, else "": the hint
    every "not a key / not a metric" line ends with."""
    import difflib  # only once a line is being written

    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
    return f"did you mean '{close[0]}'?" if close else ""
