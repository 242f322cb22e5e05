"""Everything that scores a forecaster on held-out bars: forecast metrics (`metrics`), baseline
forecasters (`baselines`), rolling-origin evaluation (`rolling`), the written report (`report`)
and the Qlib top-k backtest of a forecast signal (`backtest`, on a run's own bars when it read
no provider: `run_bars`). A library: no command-line code
(that is `kronos_engine.cli`) and no training imports. The training-time validation pass is
`kronos_engine.training.validation`.

The modules are imported on use, not here: nothing pandas-heavy or plotting-related is loaded by
importing the package.
"""
