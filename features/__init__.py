"""limitstream: features — the pure per-user feature core (DESIGN §4).

Plain, deterministic Python: a user's :class:`FeatureState` and one event in, the new state,
the installment :class:`~features.outcome.Outcome` it resolved and the transaction's anomaly
score out. No clock (time is ``event.ts``), no I/O, no mutable globals, no Faust.

Examples
--------
>>> from streams.records import Transaction
>>> cfg, s = FeatureConfig(), new_state()
>>> s = update(s, Transaction("e1", "u1", 1_767_225_600_000, "purchase", 2_500, "CNY",
...                           "5411", ""), 10_000, cfg).state
>>> vector(s, 1_767_225_600_000, 10_000)["utilization"]
0.25
>>> from_dict(to_dict(s)) == s
True
"""

from features.anomaly import score as anomaly_score
from features.outcome import Outcome
from features.state import (
    MAX_STATE_BYTES,
    FeatureState,
    clone,
    from_dict,
    new_state,
    to_dict,
    too_late_count,
)
from features.update import FeatureConfig, Update, observe_limit, update
from features.vector import vector

__all__ = [
    "MAX_STATE_BYTES",
    "FeatureConfig",
    "FeatureState",
    "Outcome",
    "Update",
    "anomaly_score",
    "clone",
    "from_dict",
    "new_state",
    "observe_limit",
    "to_dict",
    "too_late_count",
    "update",
    "vector",
]
