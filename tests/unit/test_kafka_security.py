"""Kafka client security: TLS and SASL settings reach every client the services build; PLAINTEXT stays as it was."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from common.kafka import new_admin, new_consumer, new_producer, security_options
from common.settings import ServiceSettings

pytestmark = pytest.mark.unit

TOKEN = "t" * 40


def _settings(**overrides: Any) -> ServiceSettings:
    return ServiceSettings(env="test", admin_token=TOKEN, **overrides)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A CA-style certificate and its key, written as PEM files (what an operator mounts for the brokers)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kafka.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "client.pem", folder / "client.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def _built_clients(settings: ServiceSettings) -> AsyncIterator[Any]:
    """The producer, consumer and admin client the services build, closed after (they never connect here)."""
    clients = [new_producer(settings), new_consumer(settings, ["t"]), new_admin(settings)]
    try:
        for client in clients:
            yield client
    finally:
        for client in clients:
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())


def _client_security(client: Any) -> tuple[str, ssl.SSLContext | None, str, str | None, str | None]:
    # Every aiokafka client keeps its connection settings on its AIOKafkaClient (the producer's is public).
    inner = client.client if isinstance(client, AIOKafkaProducer) else client._client
    return (
        inner._security_protocol,
        inner._ssl_context,
        inner._sasl_mechanism,
        inner._sasl_plain_username,
        inner._sasl_plain_password,
    )


async def test_default_plaintext_adds_nothing_to_the_clients() -> None:
    settings = _settings()
    assert security_options(settings) == {}
    async for client in _built_clients(settings):
        assert _client_security(client) == ("PLAINTEXT", None, "PLAIN", None, None)


async def test_sasl_ssl_with_scram_reaches_producer_consumer_and_admin(tmp_path: Path) -> None:
    ca, _ = _self_signed(tmp_path)
    settings = _settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="handoff",
        kafka_sasl_password="s3cret-password",
        kafka_ssl_cafile=ca,
    )
    options = security_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("handoff", "s3cret-password")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "kafka.test"),),)]
    async for client in _built_clients(settings):
        protocol, client_context, mechanism, user, password = _client_security(client)
        assert (protocol, mechanism, user, password) == ("SASL_SSL", "SCRAM-SHA-512", "handoff", "s3cret-password")
        assert isinstance(client_context, ssl.SSLContext)


async def test_mutual_tls_loads_the_client_certificate_and_can_skip_the_host_name(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    settings = _settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=cert,
        kafka_ssl_certfile=cert,
        kafka_ssl_keyfile=key,
        kafka_ssl_check_hostname=False,
    )
    options = security_options(settings)
    assert set(options) == {"security_protocol", "ssl_context"}  # no SASL on a TLS-only cluster
    assert options["ssl_context"].check_hostname is False
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED  # the chain is still checked
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ssl.SSLError):  # a key that does not match the certificate is refused at start-up
        security_options(settings.model_copy(update={"kafka_ssl_keyfile": _self_signed(other)[1]}))


def test_sasl_plain_over_plaintext_needs_credentials_and_tls_files_need_a_tls_protocol(tmp_path: Path) -> None:
    assert security_options(
        _settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u", kafka_sasl_password="p")
    ) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "u",
        "sasl_plain_password": "p",
    }
    with pytest.raises(ValidationError, match="HANDOFF_KAFKA_SASL_USERNAME and HANDOFF_KAFKA_SASL_PASSWORD"):
        _settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u")
    with pytest.raises(ValidationError, match="does not use TLS"):
        _settings(kafka_ssl_cafile=tmp_path / "ca.pem")
    with pytest.raises(ValidationError, match="set together"):
        _settings(kafka_security_protocol="SSL", kafka_ssl_certfile=tmp_path / "c.pem")
