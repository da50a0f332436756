"""The policy file: the default loads, its version is its hash, and every class of invalid file
is a PolicyError naming the key at fault."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

import pytest

from features.names import FEATURE_NAMES
from policies.check import check_file
from policies.spec import PolicyError, load_policy, parse_policy
from streams.settings import DEFAULT_POLICY

TEXT = DEFAULT_POLICY.read_text(encoding="utf-8")


def _set(text: str, section: str, key: str, value: str) -> str:
    """``text`` with ``key = value`` in ``[section]`` (the key must exist there)."""
    lines = text.splitlines(keepends=True)
    current = ""
    for i, line in enumerate(lines):
        m = re.match(r"^\[([a-z_.]+)\]", line)
        if m:
            current = m.group(1)
        elif current == section and re.match(rf"^{re.escape(key)}\s*=", line):
            lines[i] = f"{key} = {value}\n"
            return "".join(lines)
    raise AssertionError(f"{section}.{key} not in the default policy")


def _drop(text: str, section: str, key: str) -> str:
    return "".join(line for line in _set(text, section, key, "0").splitlines(keepends=True)
                   if line != f"{key} = 0\n")


def _add(text: str, section: str, line: str) -> str:
    return text.replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)


def test_default_policy_loads_with_its_documented_numbers() -> None:
    p = load_policy(DEFAULT_POLICY)
    assert p.version == hashlib.sha256(DEFAULT_POLICY.read_bytes()).hexdigest()
    assert (p.limits.min_limit, p.limits.max_limit, p.limits.rounding) == (50_000, 5_000_000, 100)
    assert p.reinstate.ladder == (10, 25, 50, 100)
    assert p.reinstate.stages == 3
    assert p.increase.max_pd < p.decrease.pd_cut < p.suspend.pd_suspend
    assert p.reinstate.max_pd < p.suspend.pd_suspend
    assert {w.feature for w in p.rules.weights} <= set(FEATURE_NAMES)
    assert isinstance(p.increase.require_income, bool)


def test_parse_and_load_agree_and_any_byte_changes_the_version(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(TEXT, encoding="utf-8")
    assert load_policy(f) == parse_policy(TEXT)
    assert parse_policy(TEXT + "\n").version != parse_policy(TEXT).version


def test_every_setting_in_the_default_file_has_a_comment() -> None:
    for line in TEXT.splitlines():
        if re.match(r"^[a-z_0-9]+\s*=", line):
            assert "#" in line, f"no comment on: {line}"
    # and every key of the file is one the loader reads (no silent extras)
    raw = tomllib.loads(TEXT)
    assert set(raw) == {"limits", "increase", "decrease", "suspend", "reinstate", "review",
                        "anomaly", "hold", "guardrails", "model", "rules", "operators"}


def test_check_file_summarises_and_names_the_key(tmp_path: Path) -> None:
    line = check_file(DEFAULT_POLICY)
    assert line.startswith("OK default.toml: policy version ")
    assert load_policy(DEFAULT_POLICY).version[:12] in line
    bad = tmp_path / "bad.toml"
    bad.write_text(_set(TEXT, "reinstate", "ladder", "[10, 50, 25, 100]"), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"^reinstate\.ladder\[2\]: "):
        check_file(bad)


INVALID = [
    # (what is wrong, the edited text, the key the error must name)
    ("not TOML", TEXT + "\n[limits\n", ""),
    ("unknown section", TEXT + "\n[bonus]\nx = 1  # c\n", "bonus"),
    ("missing section", TEXT.replace("[review]\n", "[reviewx]\n"), "reviewx"),
    ("unknown key", _add(TEXT, "limits", "maximum = 5"), "limits.maximum"),
    ("missing key", _drop(TEXT, "suspend", "dpd_days"), "suspend.dpd_days"),
    ("bool for an int", _set(TEXT, "limits", "rounding", "true"), "limits.rounding"),
    ("float for an int", _set(TEXT, "limits", "max_limit", "5000000.0"), "limits.max_limit"),
    ("string for an int", _set(TEXT, "increase", "max_step_pct", '"20"'),
     "increase.max_step_pct"),
    ("bool for a float", _set(TEXT, "increase", "max_pd", "false"), "increase.max_pd"),
    ("int for a bool", _set(TEXT, "increase", "require_income", "1"), "increase.require_income"),
    ("nan", _set(TEXT, "decrease", "pd_cut", "nan"), "decrease.pd_cut"),
    ("inf", _set(TEXT, "model", "max_log_loss", "inf"), "model.max_log_loss"),
    ("negative money", _set(TEXT, "limits", "min_limit", "-1"), "limits.min_limit"),
    ("negative days", _set(TEXT, "increase", "cooldown_days", "-3"), "increase.cooldown_days"),
    ("zero rounding", _set(TEXT, "limits", "rounding", "0"), "limits.rounding"),
    ("pd of 1", _set(TEXT, "suspend", "pd_suspend", "1.0"), "suspend.pd_suspend"),
    ("step over 100 %", _set(TEXT, "decrease", "step_pct", "150"), "decrease.step_pct"),
    ("max below min", _set(TEXT, "limits", "max_limit", "1"), "limits.max_limit"),
    ("default outside the bounds", _set(TEXT, "limits", "default_limit", "6_000_000"),
     "limits.default_limit"),
    ("raise and cut without a gap", _set(TEXT, "increase", "max_pd", "0.15"), "decrease.pd_cut"),
    ("cut above suspend", _set(TEXT, "decrease", "pd_cut", "0.4"), "suspend.pd_suspend"),
    ("reinstate above relapse", _set(TEXT, "reinstate", "max_pd", "0.35"), "reinstate.max_pd"),
    ("dti gap", _set(TEXT, "increase", "max_dti", "0.9"), "decrease.max_dti"),
    ("inflow gap", _set(TEXT, "increase", "min_inflow_trend", "0.5"),
     "increase.min_inflow_trend"),
    ("collapse above the decline", _set(TEXT, "decrease", "income_collapse_trend", "0.6"),
     "decrease.income_collapse_trend"),
    ("anomaly trigger above the single-transaction hold", _set(TEXT, "anomaly", "trigger",
                                                               "0.95"), "anomaly.trigger"),
    ("arrears hold after the suspension", _set(TEXT, "hold", "arrears_dpd", "30"),
     "hold.arrears_dpd"),
    ("unknown non-actionable feature", _set(TEXT, "guardrails", "non_actionable", '["shoe_size"]'),
     "guardrails.non_actionable[0]"),
    ("default label beyond its horizon", _set(TEXT, "model", "label_dpd", "200"),
     "model.label_dpd"),
    ("raise cooldown after a cut shorter than after a raise",
     _set(TEXT, "decrease", "raise_cooldown_days", "10"), "decrease.raise_cooldown_days"),
    ("ladder not increasing", _set(TEXT, "reinstate", "ladder", "[10, 50, 25, 100]"),
     "reinstate.ladder[2]"),
    ("ladder not ending at 100", _set(TEXT, "reinstate", "ladder", "[10, 25, 50]"),
     "reinstate.ladder[2]"),
    ("ladder of one rung", _set(TEXT, "reinstate", "ladder", "[100]"), "reinstate.ladder"),
    ("ladder rung above 100", _set(TEXT, "reinstate", "ladder", "[10, 150]"),
     "reinstate.ladder[1]"),
    ("ladder rung of 0", _set(TEXT, "reinstate", "ladder", "[0, 50, 100]"),
     "reinstate.ladder[0]"),
    ("ladder not an array", _set(TEXT, "reinstate", "ladder", "10"), "reinstate.ladder"),
    ("observation days per stage", _set(TEXT, "reinstate", "observation_days", "[30, 30]"),
     "reinstate.observation_days"),
    ("observation days of 0", _set(TEXT, "reinstate", "observation_days", "[30, 0, 60]"),
     "reinstate.observation_days[1]"),
    ("operator not a string", _set(TEXT, "operators", "allowed", '["ops-1", 7]'),
     "operators.allowed[1]"),
    ("duplicate operator", _set(TEXT, "operators", "allowed", '["ops-1", "ops-1"]'),
     "operators.allowed"),
    ("section not a table", "review = 3\n" + re.sub(r"\[review\]\n(?:[a-z_]+ = [^\n]*\n)*", "",
                                                      TEXT), "review"),
    ("rules: unknown feature", _add(TEXT, "rules.weights",
                                    "salary = { weight = 1.0, reference = 0.0, cap = 1.0 }"),
     "rules.weights.salary"),
    ("rules: missing cap", TEXT.replace("anomaly_score = { weight = 1.0, reference = 0.0, "
                                        "cap = 1.0 }", "anomaly_score = { weight = 1.0, "
                                        "reference = 0.0 }"), "rules.weights.anomaly_score.cap"),
    ("rules: reference above cap", TEXT.replace("utilization = { weight = 1.0, reference = 0.5",
                                                "utilization = { weight = 1.0, reference = 5.0"),
     "rules.weights.utilization.reference"),
    ("rules: unknown term key", TEXT.replace("anomaly_score = { weight = 1.0,",
                                             "anomaly_score = { weight = 1.0, slope = 2,"),
     "rules.weights.anomaly_score.slope"),
    ("rules: bool weight", TEXT.replace("anomaly_score = { weight = 1.0,",
                                        "anomaly_score = { weight = true,"),
     "rules.weights.anomaly_score.weight"),
    ("rules: no weights", TEXT.split("[rules.weights]")[0] + "[rules.weights]\n" +
     TEXT.split("[operators]")[1].join(["[operators]", ""]), "rules.weights"),
    ("rules: unknown key", _add(TEXT, "rules", "bias = 1.0"), "rules.bias"),
]


@pytest.mark.parametrize(("text", "key"), [(t, k) for _, t, k in INVALID],
                         ids=[w for w, _, _ in INVALID])
def test_invalid_policy_names_the_key(text: str, key: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    assert info.value.key == key, str(info.value)
    assert isinstance(info.value, ValueError)
    if key:
        assert str(info.value).startswith(f"{key}: ")


def test_non_utf8_file_is_a_policy_error(tmp_path: Path) -> None:
    f = tmp_path / "latin1.toml"
    f.write_bytes(TEXT.encode("utf-8") + b"# caf\xe9\n")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(f)
