"""A limitstream worker with bench-only patches: measures a lever without editing the product.

``BENCH_PATCH="agents.user_agent.BATCH_WITHIN_S=0.05;fetch_max_wait_ms=10" python -m
bench.patched_worker worker`` sets module constants (``module.NAME=value``, the value's type
taken from the constant); ``fetch_max_wait_ms=N`` sets the consumers' fetch wait (Faust
hard-codes 1 500 ms for its worker consumer); ``faust_monitor=0`` leaves Faust's Prometheus
sensor out; ``gc=default`` keeps CPython's garbage-collector thresholds (no
:func:`limitstream.gc_tuning.tune_gc`). Then it runs
``limitstream.cli``. Used by
``bench.run_all --levers``; the product never imports it.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


def apply(spec: str) -> list[str]:
    applied = []
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        name, _, raw = item.partition("=")
        if name == "fetch_max_wait_ms":
            _patch_fetch_wait(int(raw))
        elif name == "gc":
            if raw == "default":  # CPython's collector settings, not limitstream.gc_tuning's
                import limitstream.gc_tuning

                limitstream.gc_tuning.tune_gc = lambda: None
        elif name == "faust_monitor":
            if raw == "0":
                import agents.worker

                agents.worker.install_faust_monitor = lambda app, registry: None
        else:
            module_name, _, attr = name.rpartition(".")
            module = importlib.import_module(module_name)
            old = getattr(module, attr)
            setattr(module, attr, type(old)(raw))
        applied.append(item)
    return applied


def _patch_fetch_wait(ms: int) -> None:
    import aiokafka

    base = aiokafka.AIOKafkaConsumer

    class Consumer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["fetch_max_wait_ms"] = ms
            super().__init__(*args, **kwargs)

    aiokafka.AIOKafkaConsumer = Consumer


def main() -> int:
    applied = apply(os.environ.get("BENCH_PATCH", ""))
    print(f"bench.patched_worker: {applied}", file=sys.stderr, flush=True)
    from limitstream.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
