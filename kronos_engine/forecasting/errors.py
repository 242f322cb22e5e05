"""The one error type of bad forecasting input (frames, timestamps, runs, options)."""


class ForecastError(ValueError):
    """Input that cannot be forecast; the message names the series, column or folder."""
