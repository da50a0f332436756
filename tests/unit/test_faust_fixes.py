"""agents/faust_fixes.py patches private functions of Faust: these tests fail loudly when the
installed Faust is not the one the corrections were written against, or when a patched
function's signature has changed, so that an upgrade is a deliberate review, not a surprise."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import faust
import pytest

from agents import faust_fixes


def _resolve(dotted: str) -> Any:
    module, attr = dotted.split(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _faust_original(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Faust's own function, whether or not the correction is installed yet."""
    return fn.__wrapped__ if getattr(fn, "limitstream_patched", False) else fn  # type: ignore[attr-defined, no-any-return]


def test_faust_is_the_version_the_fixes_were_written_against() -> None:
    assert faust.__version__ == faust_fixes.FAUST_VERSION, (
        f"faust-streaming {faust.__version__} is installed; agents/faust_fixes.py was written "
        f"against {faust_fixes.FAUST_VERSION}: review every patch, then update FAUST_VERSION, "
        "PATCHED and the pin in pyproject.toml")


@pytest.mark.parametrize("dotted", sorted(faust_fixes.PATCHED))
def test_patched_function_keeps_its_signature(dotted: str) -> None:
    original = _faust_original(_resolve(dotted))
    assert str(inspect.signature(original)) == faust_fixes.PATCHED[dotted], (
        f"Faust changed {dotted}: agents/faust_fixes.py must be reviewed against it")


def test_install_patches_every_listed_function_once() -> None:
    faust_fixes.install()
    patched = {d: _resolve(d) for d in faust_fixes.PATCHED}
    faust_fixes.install()  # idempotent: the second call wraps nothing again
    for dotted, fn in patched.items():
        assert getattr(fn, "limitstream_patched", False), dotted
        assert _resolve(dotted) is fn, f"{dotted} was wrapped twice"
        assert not getattr(fn.__wrapped__, "limitstream_patched", False), dotted
