"""The one step shared by the worker, the replay and the tests.

``Engine.step(state, event, source)`` is a plain function of the user's state and one valid
input event: it de-duplicates (by source offset and by ``event_id``), updates the features,
and at a decision point scores the risk, applies the policy and builds the output messages.
No Kafka, no clock: the worker and ``limitstream replay`` get the same bytes for the same log.

Examples
--------
>>> from streams.records import Transaction
>>> from policies.spec import load_policy
>>> from features import FeatureConfig
>>> from streams.settings import DEFAULT_POLICY
>>> engine = Engine.rules_only(load_policy(DEFAULT_POLICY), FeatureConfig())
>>> ev = Transaction("e1", "u1", 1_767_225_600_000, "purchase", 12_000, "CNY", "5411", "CN")
>>> r = engine.step(None, ev, Source("transactions", 0, 41))
>>> r.state.account.status.value, r.state.features_applied, r.duplicate
('ACTIVE', 1, '')
>>> engine.step(r.state, ev, Source("transactions", 0, 41)).duplicate
'offset'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

import features as feat
from features.names import FEATURE_NAMES, FEATURE_SET
from features.outcome import Outcome
from features.windows import DAY_MS
from policies.account import Account, Status, new_account
from policies.decide import Decision, Observation, decide, is_decision_point
from policies.reasons import customer_text
from policies.risk import Risk
from policies.rules import rule_risk
from policies.scorer import label_segment
from policies.spec import Policy
from streams.codec import derive_id, payload_hash
from streams.records import InputEvent, InstallmentDue, LimitCommand, Transaction

#: Upstream duplicates are caught among this many most recent event ids of the user. A
#: producer retry lands within seconds, so a short memory suffices and keeps the state bounded.
RECENT_IDS: Final = 32
#: Installments waiting for their outcome, per user; the oldest beyond this expires.
MAX_PENDING: Final = 6

#: Logical output topics (the settings map them to real names).
LIMIT_CHANGES: Final = "limit-changes"
ACCOUNT_STATUS: Final = "account-status"
DECISIONS: Final = "decisions"
LABELS: Final = "labels"


@dataclass(frozen=True, slots=True)
class Source:
    """Where an input was read: the topic (logical name: an input topic or the re-key
    topic), partition and offset."""

    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class Pending:
    """An issued installment waiting for its outcome, with the features it was issued under."""

    due_ts: int
    x: list[float]  #: the vector at issue time, in FEATURE_NAMES order

    def to_list(self) -> list[Any]:
        return [self.due_ts, self.x]


@dataclass(slots=True)
class UserState:
    """Everything limitstream keeps about one user (one table value)."""

    user_id: str
    account: Account
    features: feat.FeatureState
    #: Per-user output version: +1 per decision; every output of a decision carries it.
    version: int = 0
    #: topic read (an input topic or the re-key topic) -> [partition, last applied offset]
    offsets: dict[str, list[int]] = field(default_factory=dict)
    #: The most recent event ids applied, oldest first, each with its payload's short hash
    #: (codec.payload_hash; "" in states stored before hashes were kept).
    recent_ids: dict[str, str] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)
    features_applied: int = 0
    #: The newest event time applied (the user's "now": the view and reviews use it).
    last_ts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "u": self.user_id,
            "a": self.account.to_dict(),
            "f": feat.to_dict(self.features),
            "v": self.version,
            "o": self.offsets,
            # (id, hash) tuples: orjson writes them as the same [id, hash] arrays, without
            # building 32 lists per encode (every touched state, every batch).
            "r": list(self.recent_ids.items()),
            "p": {k: p.to_list() for k, p in self.pending.items()},
            "n": self.features_applied,
            "t": self.last_ts,
            # The pending vectors' feature set (only with some): a state stored by a code with
            # other features has vectors whose values another list of names describes.
            **({"fs": FEATURE_SET} if self.pending else {}),
        }

    def encode(self) -> bytes:
        """The stored form (the table value): compact JSON. Keys come in the fixed order
        :meth:`to_dict` builds them, so no sorting is needed for stable bytes."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def decode(cls, raw: bytes) -> UserState:
        """The inverse of :meth:`encode`."""
        return cls.from_dict(orjson.loads(raw))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UserState:
        return cls(
            user_id=d["u"],
            account=Account.from_dict(d["a"]),
            features=feat.from_dict(d["f"]),
            version=d["v"],
            offsets={k: list(v) for k, v in d["o"].items()},
            recent_ids=dict((r, "") if isinstance(r, str) else (r[0], r[1]) for r in d["r"]),
            # Vectors of another feature set (or of a state stored before sets were named) are
            # dropped: labelled, they would teach the model values under the wrong names (and
            # their length no longer fits FEATURE_NAMES). Their labels are lost, as if expired.
            pending={k: Pending(v[0], list(v[1])) for k, v in d["p"].items()}
            if d.get("fs") == FEATURE_SET else {},
            features_applied=d["n"],
            last_ts=d["t"],
        )

    def view(self) -> dict[str, Any]:
        """The user as ``GET /users/{id}`` shows it: account, ledger and feature vector."""
        x = feat.vector(self.features, self.last_ts, self.account.limit)
        balance = int(x["balance"])
        return {
            "user_id": self.user_id,
            "status": self.account.status.value,
            "stage": self.account.stage,
            "limit": self.account.limit,
            "pre_suspension_limit": self.account.pre_suspension_limit,
            "balance": balance,
            # Only an ACTIVE or PROBATION line can be drawn on; a FROZEN one keeps its limit
            # to restore, but nothing is available until it is unfrozen.
            "available_credit": (max(0, self.account.limit - balance)
                                 if self.account.status in (Status.ACTIVE, Status.PROBATION)
                                 else 0),
            "version": self.version,
            "last_event_ts": self.last_ts,
            "events_applied": self.features_applied,
            "pending_labels": len(self.pending),
            "features": x,
        }


@dataclass(frozen=True, slots=True)
class Output:
    """One message to send: logical topic, key (the user) and JSON-able value."""

    topic: str
    key: str
    value: dict[str, Any]


@dataclass(slots=True)
class StepResult:
    """The new state, the outputs, and what the worker counts in its metrics."""

    state: UserState
    outputs: list[Output] = field(default_factory=list)
    #: "" applied; "offset": replay of an applied offset; "event_id": upstream duplicate;
    #: "conflicting": an applied event_id with another payload (not applied: dead-lettered)
    duplicate: str = ""
    #: for a "conflicting" duplicate: the payload hash stored for its event_id
    stored_hash: str = ""
    decisions: list[Decision] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    expired_labels: int = 0
    late_events: int = 0
    fallback_reason: str = ""
    #: the event came after a later event of the user (its ts is before the user's clock)
    out_of_order: bool = False


def _rounded(v: float) -> float:
    # Six significant digits: enough for the model, and keeps the pending snapshot small.
    return float(f"{v:.6g}")


class Engine:
    """The pure step, configured with a policy, the feature settings and a risk scorer."""

    def __init__(self, policy: Policy, feature_cfg: feat.FeatureConfig,
                 risk: Callable[[Mapping[str, float]], Risk], currency: str = "CNY") -> None:
        self.policy = policy
        self.feature_cfg = feature_cfg
        self.risk = risk
        self.currency = currency

    @classmethod
    def rules_only(cls, policy: Policy, feature_cfg: feat.FeatureConfig,
                   currency: str = "CNY") -> Engine:
        """An engine that scores with the policy's transparent rule score only."""
        return cls(policy, feature_cfg, lambda x: rule_risk(x, policy), currency)

    def new_state(self, user_id: str, ts: int) -> UserState:
        return UserState(user_id, new_account(self.policy, ts), feat.new_state())

    def step(self, state: UserState | None, event: InputEvent, source: Source) -> StepResult:
        """Apply one valid event to the user's state (``None``: a user seen the first time).

        The state object passed in is consumed: the result holds the new one.
        """
        if state is None:
            state = self.new_state(event.user_id, event.ts)
        seen = state.offsets.get(source.topic)
        if seen is not None and seen[0] == source.partition and source.offset <= seen[1]:
            # A redelivery after a crash or a rebalance: the state already holds it, and its
            # outputs were delivered before the state was stored (see agents/user_agent.py).
            return StepResult(state, duplicate="offset")
        digest = payload_hash(event)
        stored = state.recent_ids.get(event.event_id)
        if stored is not None and stored and stored != digest:
            # Not a redelivery: another payload under an applied id. It is dead-lettered and,
            # like every dead letter, leaves no trace in the state (it can be re-driven).
            return StepResult(state, duplicate="conflicting", stored_hash=stored)
        if stored is not None:
            state.offsets[source.topic] = [source.partition, source.offset]
            return StepResult(state, duplicate="event_id")
        self.mark_read(state, event, source, digest)

        result = StepResult(state)
        too_late_before = feat.too_late_count(state.features)
        upd = feat.update(state.features, event, state.account.limit, self.feature_cfg)
        state.features = upd.state
        state.features_applied += 1
        result.out_of_order = event.ts < state.last_ts
        state.last_ts = max(state.last_ts, event.ts)
        result.late_events = feat.too_late_count(state.features) - too_late_before
        result.expired_labels = self._expire_pending(state, event.ts)

        decision_point = is_decision_point(state.account, event, upd.anomaly, self.policy,
                                           state.features)
        if not decision_point and not isinstance(event, InstallmentDue):
            return result
        x = feat.vector(state.features, event.ts, state.account.limit)
        if isinstance(event, InstallmentDue):
            self._keep_snapshot(state, event, x, result)
        if upd.outcome is not None:
            self._emit_label(state, upd.outcome, event, result)
        if not decision_point:
            return result
        risk = self.risk(x)
        result.fallback_reason = risk.fallback_reason
        old = state.account
        account, decisions = decide(old, Observation(event, x, risk, upd.outcome, upd.anomaly),
                                    self.policy)
        state.account = account
        if account.limit != old.limit:
            state.features = feat.observe_limit(state.features, account.limit, event.ts)
        for d in decisions:
            result.decisions.append(d)
            result.outputs.extend(self._outputs(state, event, d, risk, x))
        if result.out_of_order:  # the audit trail says the decision came out of event order
            for out in result.outputs:
                if out.topic == DECISIONS:
                    out.value["out_of_order"] = True
        return result

    @staticmethod
    def mark_read(state: UserState, event: InputEvent, source: Source, digest: str) -> None:
        """Record that ``event`` (payload hash ``digest``) at ``source`` was applied. Only an
        applied event is recorded: a refused one, once its cause is fixed, can be sent again."""
        state.offsets[source.topic] = [source.partition, source.offset]
        if event.event_id not in state.recent_ids:
            state.recent_ids[event.event_id] = digest
            if len(state.recent_ids) > RECENT_IDS:
                del state.recent_ids[next(iter(state.recent_ids))]

    # -- delayed labels --------------------------------------------------------------------

    def _keep_snapshot(self, state: UserState, event: InstallmentDue, x: Mapping[str, float],
                       result: StepResult) -> None:
        state.pending[event.installment_id] = Pending(
            event.due_ts, [_rounded(x[n]) for n in FEATURE_NAMES])
        while len(state.pending) > MAX_PENDING:
            oldest = min(state.pending, key=lambda k: (state.pending[k].due_ts, k))
            del state.pending[oldest]
            result.expired_labels += 1

    def _expire_pending(self, state: UserState, ts: int) -> int:
        horizon = self.policy.model.label_horizon_days * DAY_MS
        expired = [k for k, p in state.pending.items() if p.due_ts + horizon < ts]
        for k in expired:
            del state.pending[k]
        return len(expired)

    def _emit_label(self, state: UserState, outcome: Outcome, event: InputEvent,
                    result: StepResult) -> None:
        pending = state.pending.get(outcome.installment_id)
        if pending is None:
            return  # no snapshot (issued before the horizon, or already labelled)
        bad = outcome.days_past_due >= self.policy.model.label_dpd
        if outcome.kind == "overdue" and not bad:
            return  # late, but not yet late enough to call it a default: wait
        label = 1 if bad else 0
        del state.pending[outcome.installment_id]
        x = dict(zip(FEATURE_NAMES, pending.x, strict=True))
        resolved = x["ontime_count_12"] + x["late_count_12"]
        result.labels.append(label)
        result.outputs.append(Output(LABELS, state.user_id, {
            "event_id": derive_id(state.user_id, outcome.installment_id, "label"),
            "user_id": state.user_id,
            "installment_id": outcome.installment_id,
            "ts": event.ts,
            "label": label,
            # current vs arrears at issue (only current ones are learnt), thin file or not
            "segment": label_segment(
                x, thin_file=resolved < self.policy.model.thin_file_installments),
            "x": x,
        }))

    # -- outputs ---------------------------------------------------------------------------

    def _outputs(self, state: UserState, event: InputEvent, d: Decision, risk: Risk,
                 x: Mapping[str, float]) -> list[Output]:
        state.version += 1
        uid = state.user_id
        common: dict[str, Any] = {
            "user_id": uid,
            "ts": event.ts,
            "version": state.version,
            "action": d.action.value,
            "reasons": list(d.reasons),
            "reason_texts": [customer_text(c) for c in d.reasons],
            "risk_score": round(risk.pd, 6),
            "risk_source": risk.source,
            "model_version": risk.model_version,
            "policy_version": self.policy.version,
            "trigger_event_id": event.event_id,
        }
        out: list[Output] = []
        if d.new_limit != d.old_limit:
            out.append(Output(LIMIT_CHANGES, uid, {
                **common,
                "event_id": derive_id(uid, event.event_id, d.action.value, "limit"),
                "old_limit": d.old_limit,
                "new_limit": d.new_limit,
                "status": d.new_status.value,
                "stage": d.new_stage,
                "currency": self.currency,
                "top_features": [[n, round(v, 6)] for n, v in d.top_features],
            }))
        if d.new_status != d.old_status or d.new_stage != d.old_stage:
            out.append(Output(ACCOUNT_STATUS, uid, {
                **common,
                "event_id": derive_id(uid, event.event_id, d.action.value, "status"),
                "old_status": d.old_status.value,
                "new_status": d.new_status.value,
                "old_stage": d.old_stage,
                "stage": d.new_stage,
                "limit": d.new_limit,
                "hold_until_ts": d.hold_until_ts,
            }))
        command = isinstance(event, LimitCommand)
        trigger_kind = f"command:{event.kind}" if command else event.kind
        audit: dict[str, Any] = {
            **common,
            "event_id": derive_id(uid, event.event_id, d.action.value, "decision"),
            "trigger_kind": trigger_kind,
            "old_limit": d.old_limit,
            "new_limit": d.new_limit,
            "old_status": d.old_status.value,
            "new_status": d.new_status.value,
            "old_stage": d.old_stage,
            "new_stage": d.new_stage,
            "fallback_reason": risk.fallback_reason,
            "hold_until_ts": d.hold_until_ts,
            "top_features": [[n, round(v, 6)] for n, v in d.top_features],
            "features": {n: round(x[n], 6) for n in FEATURE_NAMES},
        }
        if isinstance(event, LimitCommand):
            audit["operator"] = event.operator
            audit["operator_reason"] = event.reason
        if isinstance(event, Transaction):
            audit["anomaly_score"] = round(x["anomaly_score"], 6)
        out.append(Output(DECISIONS, uid, audit))
        return out
