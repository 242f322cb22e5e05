"""The command line: one module per command (`train`, `pipeline`, `predict`, `evaluate`,
`backtest`, `plot`; `launch`/`worker` for `--nprocs`), the flags generated from the config
schema (`flags`) and the process shell they share (`shell`: logging, one `error:` line and the
exit code). The top layer: nothing in the library imports it.
"""
