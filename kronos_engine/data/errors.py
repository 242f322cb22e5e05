"""The one exception type of the data pipeline."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or unusable input data.

    Messages are one line and name the file, symbol, row (1-based data row, or the timestamp)
    and key involved, plus what is allowed, so a user can fix the input without a debugger.
    """
