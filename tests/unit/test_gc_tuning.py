"""Every limitstream command runs with the collector settings of limitstream.gc_tuning."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from limitstream.cli import main
from limitstream.gc_tuning import GC_THRESHOLDS, tune_gc
from streams.settings import DEFAULT_POLICY


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_gc")
def test_tune_gc_freezes_what_is_loaded_and_raises_the_thresholds() -> None:
    gc.unfreeze()
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 1000  # the modules loaded so far
    assert GC_THRESHOLDS[0] > 700  # CPython's default young-generation threshold


@pytest.mark.usefixtures("restored_gc")
def test_the_cli_tunes_the_collector(capsys: pytest.CaptureFixture[str]) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    assert main(["policy", "check", str(DEFAULT_POLICY)]) == 0
    assert "OK" in capsys.readouterr().out
    assert gc.get_threshold() == GC_THRESHOLDS
