"""The user agent's pure helpers: defensive header decode, what counts as a broker outage."""

from __future__ import annotations

from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
)

from agents.user_agent import _broker_unreachable, _header
from policies.processor import SOURCE_HEADER


def test_a_header_that_is_not_utf8_is_read_with_replacement_characters() -> None:
    value = _header([(SOURCE_HEADER, b"\xff\xfetransactions")], SOURCE_HEADER)
    assert value == "\ufffd\ufffdtransactions"  # not a topic: the processor dead-letters it


def test_headers_as_list_or_mapping_and_missing_values() -> None:
    assert _header({SOURCE_HEADER: b"repayments"}, SOURCE_HEADER) == "repayments"
    assert _header([("other", b"x"), (SOURCE_HEADER, None)], SOURCE_HEADER) == ""
    assert _header(None, SOURCE_HEADER) == ""
    assert _header([("other", b"x")], SOURCE_HEADER) == ""


def test_only_an_unreachable_broker_is_waited_for_without_bound() -> None:
    assert _broker_unreachable(KafkaConnectionError())
    assert _broker_unreachable(KafkaTimeoutError())
    assert _broker_unreachable(NotLeaderForPartitionError())
    # The broker refuses these records whatever happens: isolate them.
    assert not _broker_unreachable(MessageSizeTooLargeError())
    assert not _broker_unreachable(RuntimeError("a bug"))
