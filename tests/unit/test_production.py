"""Production refuses to start on an insecure default, and says which setting and how to fix it.

Each service is built as its process builds it (``create_app``), which refuses before it
opens anything; ``tend topics`` refuses before it reaches the broker.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from cli.main import main as tend
from services.console.app import create_app as create_console
from services.console.settings import ConsoleSettings
from services.ingest.app import create_app as create_ingest
from services.outreach.app import create_app as create_outreach
from services.outreach.settings import OutreachSettings
from services.scoring.app import create_app as create_scoring
from shared.production import InsecureSettings, kafka_problems, topic_problems
from shared.settings import CommonSettings

STRONG_SECRET = "k" * 48


def _common(**update: object) -> CommonSettings:
    """Production settings with nothing to refuse (SASL_SSL), then ``update``."""
    secure = CommonSettings.model_validate(
        {
            "environment": "production",
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_username": "tend-ingest",
            "kafka_sasl_password": "s3cret",
            "topic_replication_factor": 3,
        }
    )
    return secure.model_copy(update=update)


def _outreach(**update: object) -> OutreachSettings:
    return OutreachSettings(
        unsubscribe_secret=SecretStr(STRONG_SECRET), public_base_url="https://tend.example.com"
    ).model_copy(update=update)


def test_a_secure_production_configuration_starts() -> None:
    create_ingest(_common())
    create_scoring(_common())
    create_outreach(_common(), _outreach())


def test_development_keeps_its_defaults() -> None:
    dev = CommonSettings(environment="development")
    create_ingest(dev)
    create_outreach(dev, OutreachSettings())


def test_the_development_unsubscribe_secret_is_refused() -> None:
    with pytest.raises(InsecureSettings) as refused:
        create_outreach(
            _common(), _outreach(unsubscribe_secret=OutreachSettings().unsubscribe_secret)
        )
    message = str(refused.value)
    assert "TEND_ENVIRONMENT=production" in message
    assert "TEND_OUTREACH_UNSUBSCRIBE_SECRET is the development default" in message
    assert "openssl rand -hex 32" in message


def test_a_short_unsubscribe_secret_is_refused() -> None:
    with pytest.raises(InsecureSettings, match="TEND_OUTREACH_UNSUBSCRIBE_SECRET has 6 char"):
        create_outreach(_common(), _outreach(unsubscribe_secret=SecretStr("123456")))


@pytest.mark.parametrize("url", ["http://127.0.0.1:8003", "http://tend.example.com", "tend.io"])
def test_a_public_base_url_that_is_not_https_is_refused(url: str) -> None:
    with pytest.raises(InsecureSettings) as refused:
        create_outreach(_common(), _outreach(public_base_url=url))
    assert f"TEND_OUTREACH_PUBLIC_BASE_URL={url} is not https" in str(refused.value)


@pytest.mark.parametrize("create", [create_ingest, create_scoring])
def test_kafka_without_tls_is_refused_unless_allowed(create: object) -> None:
    plain = _common(kafka_security_protocol="PLAINTEXT")
    with pytest.raises(InsecureSettings) as refused:
        create(plain)  # type: ignore[operator]
    assert "TEND_KAFKA_SECURITY_PROTOCOL=PLAINTEXT is Kafka without TLS" in str(refused.value)
    assert "TEND_KAFKA_ALLOW_PLAINTEXT=true" in str(refused.value)
    create(plain.model_copy(update={"kafka_allow_plaintext": True}))  # type: ignore[operator]


def test_sasl_plain_over_a_plaintext_listener_is_refused_even_when_plaintext_is_allowed() -> None:
    clear = _common(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_allow_plaintext=True,
    )
    with pytest.raises(InsecureSettings) as refused:
        create_ingest(clear)
    assert "sends the Kafka password in clear text" in str(refused.value)
    assert "use SASL_SSL" in str(refused.value)
    # SCRAM never sends the password; on a network the operator vouches for, it may run.
    create_ingest(clear.model_copy(update={"kafka_sasl_mechanism": "SCRAM-SHA-512"}))


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(InsecureSettings) as refused:
        create_outreach(_common(kafka_security_protocol="PLAINTEXT"), OutreachSettings())
    lines = [line for line in str(refused.value).splitlines() if line.startswith("- ")]
    assert len(lines) == 3


def test_the_console_refuses_cookies_sent_over_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEND_ENVIRONMENT", "production")
    with pytest.raises(InsecureSettings, match="TEND_CONSOLE_SECURE_COOKIES is false"):
        create_console(ConsoleSettings(secure_cookies=False))


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TEND_TOPIC_REPLICATION_FACTOR": "1"}, "TEND_TOPIC_REPLICATION_FACTOR=1 keeps fewer"),
        (
            {"TEND_TOPIC_REPLICATION_FACTOR": "3", "TEND_TOPIC_MIN_INSYNC_REPLICAS": "1"},
            "TEND_TOPIC_MIN_INSYNC_REPLICAS=1: an event is acknowledged once a single broker",
        ),
        (
            {"TEND_TOPIC_REPLICATION_FACTOR": "3", "TEND_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
            "TEND_KAFKA_SECURITY_PROTOCOL=PLAINTEXT is Kafka without TLS",
        ),
    ],
)
def test_tend_topics_refuses_topics_that_could_lose_events_before_reaching_the_broker(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    named: str,
) -> None:
    # Nothing listens there: a refusal that reached for the broker would hang or fail apart.
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("TEND_ENVIRONMENT", "production")
    monkeypatch.setenv("TEND_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TEND_KAFKA_SASL_USERNAME", "ops")
    monkeypatch.setenv("TEND_KAFKA_SASL_PASSWORD", "s3cret")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tend(["topics"]) == 2
    err = capsys.readouterr().err
    assert "tend topics: refusing to start with insecure settings in production" in err
    assert named in err


def test_a_one_broker_cluster_is_allowed_when_said_so() -> None:
    one = _common(topic_replication_factor=1)
    assert len(topic_problems(one)) == 2
    assert one.min_insync_replicas == 1
    assert topic_problems(one.model_copy(update={"allow_single_broker": True})) == []
    assert topic_problems(_common()) == []
    assert _common().min_insync_replicas == 2


def test_sasl_without_credentials_and_impossible_replicas_are_refused_in_any_environment() -> None:
    with pytest.raises(ValidationError, match="needs TEND_KAFKA_SASL_USERNAME"):
        CommonSettings(kafka_security_protocol="SASL_SSL")
    with pytest.raises(ValidationError, match="no write could ever be acknowledged"):
        CommonSettings(topic_replication_factor=1, topic_min_insync_replicas=2)
    with pytest.raises(ValidationError, match="set both or neither"):
        CommonSettings(kafka_security_protocol="SSL", kafka_ssl_certfile="/tmp/c.pem")
    assert kafka_problems(_common()) == []
