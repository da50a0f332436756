"""Settings: read once from LIMITSTREAM_*, validated with the variable to fix, secrets masked."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from limitstream.cli import main
from streams.app import aiokafka_kwargs, create_app, faust_credentials
from streams.settings import Settings, SettingsError


def test_defaults_and_topic_prefix() -> None:
    s = Settings.from_env({"LIMITSTREAM_TOPIC_PREFIX": "t1-",
                           "LIMITSTREAM_TOPIC_DEAD_LETTER": "dlq"})
    assert s.partitions == 8 and s.store == "memory://" and s.web_host == "127.0.0.1"
    assert s.topics.transactions == "t1-transactions" and s.topics.dead_letter == "t1-dlq"
    assert s.uses_embedded_broker


def test_secrets_never_show_in_repr() -> None:
    s = Settings.from_env({"LIMITSTREAM_SASL_PASSWORD": "pa55word-secret",
                           "LIMITSTREAM_MODEL_HMAC_KEY": "k" * 32})
    assert "pa55word-secret" not in repr(s) and "k" * 32 not in repr(s)
    assert s.security.sasl_password.value == "pa55word-secret"


@pytest.mark.parametrize(("env", "variable"), [
    ({"LIMITSTREAM_PROCESSING_GUARANTEE": "exactly_once"}, "PROCESSING_GUARANTEE"),
    ({"LIMITSTREAM_PARTITIONS": "zero"}, "PARTITIONS"),
    ({"LIMITSTREAM_PARTITIONS": "0"}, "PARTITIONS"),
    ({"LIMITSTREAM_STORE": "redis://"}, "STORE"),
    ({"LIMITSTREAM_CURRENCY": "EURO"}, "CURRENCY"),
    ({"LIMITSTREAM_MODEL_HMAC_KEY": "short"}, "MODEL_HMAC_KEY"),
    ({"LIMITSTREAM_MODEL_KIND": "forest"}, "MODEL_KIND"),
    ({"LIMITSTREAM_SECURITY_PROTOCOL": "TLS9"}, "SECURITY_PROTOCOL"),
    ({"LIMITSTREAM_WEB_URL": "worker-1:6066"}, "WEB_URL"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=f"LIMITSTREAM_{variable}"):
        Settings.from_env(env)


def test_exactly_once_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LIMITSTREAM_PROCESSING_GUARANTEE", "exactly_once")
    monkeypatch.setenv("LIMITSTREAM_BROKER", "kafka://127.0.0.1:1")
    with pytest.raises(SystemExit) as exc:
        main(["worker"])
    assert "exactly_once" in str(exc.value.code)


def test_sasl_settings_reach_both_kafka_clients() -> None:
    s = Settings.from_env({"LIMITSTREAM_BROKER": "kafka://k1:9093;k2:9093",
                           "LIMITSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                           "LIMITSTREAM_SASL_MECHANISM": "SCRAM-SHA-512",
                           "LIMITSTREAM_SASL_USERNAME": "limitstream",
                           "LIMITSTREAM_SASL_PASSWORD": "pw"})
    kw = aiokafka_kwargs(s)
    assert kw["bootstrap_servers"] == ["k1:9093", "k2:9093"]
    assert (kw["security_protocol"], kw["sasl_mechanism"], kw["sasl_plain_username"],
            kw["sasl_plain_password"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512", "limitstream", "pw")
    creds = faust_credentials(s)
    assert creds.username == "limitstream" and creds.password == "pw"


def test_policy_check_command(capsys: pytest.CaptureFixture[str]) -> None:
    from streams.settings import DEFAULT_POLICY

    assert main(["policy", "check", str(DEFAULT_POLICY)]) == 0
    out = capsys.readouterr().out
    assert "version" in out.lower()


def test_advertised_url_for_table_routing() -> None:
    """Faust routes /users/{id} to the owner's canonical URL: never a wildcard address."""
    assert Settings.from_env({"LIMITSTREAM_WEB_PORT": "7001"}).advertised_url == \
        "http://127.0.0.1:7001"
    wildcard = Settings.from_env({"LIMITSTREAM_WEB_HOST": "0.0.0.0"})
    assert wildcard.advertised_url == f"http://{socket.getfqdn()}:6066"
    assert "0.0.0.0" not in wildcard.advertised_url
    explicit = Settings.from_env({"LIMITSTREAM_WEB_HOST": "0.0.0.0",
                                  "LIMITSTREAM_WEB_URL": "http://worker-1:6066/"})
    assert explicit.advertised_url == "http://worker-1:6066"
    app = create_app(dataclasses.replace(explicit, broker="kafka://127.0.0.1:9"))
    assert str(app.conf.canonical_url) == "http://worker-1:6066"
