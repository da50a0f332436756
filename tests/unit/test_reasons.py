"""The reason-code registry: well formed, complete for the code that uses it, documented."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from policies.account import Status
from policies.decide import Action
from policies.reasons import (
    FALLBACK_CODES,
    KINDS,
    MAX_REASONS,
    REGISTRY,
    customer_text,
    officer_text,
    render_markdown,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reason-codes.md"
CODE_RE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$")


def test_codes_are_stable_upper_snake_identifiers_with_both_texts() -> None:
    assert MAX_REASONS == 4
    for code, r in REGISTRY.items():
        assert code == r.code and CODE_RE.match(code), code
        assert r.kind in KINDS
        assert r.customer and "\n" not in r.customer and r.customer.endswith("."), code
        assert r.officer and r.officer.endswith("."), code
        assert "|" not in r.customer + r.officer  # would break the markdown table
        assert customer_text(code) == r.customer and officer_text(code) == r.officer


def test_model_fallback_codes_are_registered() -> None:
    for code in (*FALLBACK_CODES, "MODEL_FALLBACK"):
        assert REGISTRY[code].kind == "model"


def _string_constants(module_name: str) -> set[str]:
    # import_module, not attribute access: ``policies.decide`` is also the exported function.
    path = Path(str(importlib.import_module(module_name).__file__))
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and CODE_RE.match(n.value)}


def test_every_code_used_in_decide_and_rules_is_registered() -> None:
    used = _string_constants("policies.decide") | _string_constants("policies.rules")
    assert used, "the scan found no codes: the pattern is wrong"
    enums = {a.value for a in Action} | {s.value for s in Status}
    assert used - enums - set(REGISTRY) == set()


def test_every_registered_code_is_used_somewhere() -> None:
    # Dead codes confuse notices; the model's fallback codes are set by the scorer.
    used = _string_constants("policies.decide") | set(FALLBACK_CODES)
    assert set(REGISTRY) - used == set()


def test_reference_page_is_generated_from_the_registry() -> None:
    assert DOC.read_text(encoding="utf-8") == render_markdown(), (
        "docs/reason-codes.md is stale; regenerate with: .venv/bin/python -c 'from "
        "policies.reasons import render_markdown; print(render_markdown(), end=\"\")' > "
        "docs/reason-codes.md")
    for code in REGISTRY:
        assert f"`{code}`" in DOC.read_text(encoding="utf-8")
