"""The consumer-group timings every test worker gets on the embedded broker."""

from __future__ import annotations

from typing import Final

#: The embedded broker accepts a session below Apache Kafka's 6 s minimum (the 10 s default is
#: for Kafka): 4 s keeps the tests' hand-overs short (after a SIGTERM, two workers, 4
#: partitions: 3.0 s with 4 s, 3.9 s with 6 s, 6.0 s with 10 s). The tests wait for the
#: group's commits after every phase they publish: a 500 ms commit interval (Faust's default
#: is 2.8 s) shortens each wait, and a crash then re-sends less.
GROUP_TIMINGS: Final = {
    "LIMITSTREAM_SESSION_TIMEOUT_MS": "4000",
    "LIMITSTREAM_COMMIT_INTERVAL_MS": "500",
}
