"""``limitstream policy check FILE``: validate a policy file and summarise it in one line.

Examples
--------
>>> from streams.settings import DEFAULT_POLICY
>>> line = check_file(DEFAULT_POLICY)
>>> line.split()[:4], "ladder 10/25/50/100%" in line
(['OK', 'default.toml:', 'policy', 'version'], True)
"""

from __future__ import annotations

from pathlib import Path

from policies.spec import load_policy


def _money(v: int) -> str:
    # Minor units shown as major units with two decimals (display only, never computed on).
    return f"{v // 100:,}.{v % 100:02d}"


def check_file(path: str | Path) -> str:
    """Load and validate ``path``; a one-line summary with the version, or
    :class:`~policies.spec.PolicyError` naming the key at fault."""
    p = load_policy(path)
    ladder = "/".join(str(r) for r in p.reinstate.ladder)
    return (
        f"OK {Path(path).name}: policy version {p.version[:12]} "
        f"(limits {_money(p.limits.min_limit)}..{_money(p.limits.max_limit)}, "
        f"default {_money(p.limits.default_limit)}, income x{p.limits.income_multiple_pct}%, "
        f"pd raise<={p.increase.max_pd} cut>={p.decrease.pd_cut} "
        f"suspend>={p.suspend.pd_suspend} reinstate<={p.reinstate.max_pd}, "
        f"ladder {ladder}%, {len(p.operators.allowed)} operators)"
    )
