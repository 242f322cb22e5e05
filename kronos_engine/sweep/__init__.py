"""Hyperparameter sweeps on Optuna (`scripts/sweep.py`): the `sweep:` section (`spec`), the
trial configs and their up-front check (`space`), storage, study and suggestions (`engine`),
the workers and their trial processes (`runner`), the pruning callback inside a trial
(`pruning`), a trial's result (`outcome`) and the report (`report`).

A layer of its own between the commands (`cli`) and the plug-ins: it drives training runs
through `scripts/train.py`'s entry and reads their folders, and imports optuna, an extra
(`pip install 'kronos-engine[sweep]'`), so nothing below it depends on optuna.
"""
