"""A ``limitstream worker`` in a child process: used by the demo, the tests and the benches.

The worker is a separate process, as in production: it can be SIGKILLed and restarted, and
several can share one host, each on its own loopback web port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from streams.broker import terminate


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    web_port: int
    log_path: Path | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @classmethod
    def start(cls, env: dict[str, str], web_port: int, log_path: Path | None = None,
              module: str = "limitstream") -> WorkerProcess:
        """Start ``python -m module worker`` with ``env`` (LIMITSTREAM_*) on ``web_port``."""
        full_env = {**os.environ, **env, "LIMITSTREAM_WEB_PORT": str(web_port)}
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", module, "worker"], env=full_env,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        finally:
            if log_path:
                out.close()  # type: ignore[union-attr]
        return cls(process, web_port, log_path)

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until ``/readyz`` answers 200 (partitions assigned, tables recovered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}"
                                   f"{self.log_tail()}")
            with contextlib.suppress(OSError):
                if self.get("/readyz")[0] == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready within {timeout:.0f} s{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the worker's log, headed by its URL, for an error message ("" if none)."""
        if self.log_path and self.log_path.exists():
            return (f"\n--- log of the worker at {self.url} ---\n"
                    + self.log_path.read_text(errors="replace")[-chars:])
        return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, no clean hand-over."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (Faust hands its partitions over), then SIGKILL if it lingers."""
        terminate(self.process, timeout)
