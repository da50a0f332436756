"""The offline lab: simulator, replay, in-process learning, backtest and report — the same core
the worker runs, over recorded logs and without a broker."""
