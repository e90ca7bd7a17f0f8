"""Kafka access: config + KAFKA_* secrets, overridden by the Airflow Connection inside a task, mapped to
kafka-python and to confluent-kafka (librdkafka) with the same meaning; bad combinations are clear errors."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from feedloop.core import streams
from feedloop.core.config import KafkaSettings
from feedloop.core.credentials import (SASL_MECHANISMS, SECURITY_PROTOCOLS, CredentialsError, KafkaAccess, apply_connection,
                                  resolve_kafka)

CA = "/etc/ssl/certs/ca-certificates.crt"  # a real PEM bundle: librdkafka loads it when the client is built
SASL_SSL = KafkaSettings(bootstrap_servers="b1:9093,b2:9093", security_protocol="SASL_SSL",
                         sasl_mechanism="SCRAM-SHA-512", ssl_cafile=CA)
SECRETS = {"KAFKA_SASL_USERNAME": "svc-feedloop", "KAFKA_SASL_PASSWORD": "s3cr3t"}


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory) -> tuple[str, str]:
    """A self-signed client certificate and its key (PEM), for mutual TLS."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "feedloop-test")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "client.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "client.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return str(folder / "client.pem"), str(folder / "client.key")


def _kafka_connection(monkeypatch, **body):
    monkeypatch.setenv("AIRFLOW_CONN_FEEDLOOP_KAFKA", json.dumps({"conn_type": "kafka", **body}))


def test_the_embedded_default_is_plaintext_with_only_the_bootstrap_servers():
    access = resolve_kafka(KafkaSettings(), environ={})
    assert access.kafka_python() == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}
    assert access.confluent() == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT"}


def test_outside_airflow_sasl_ssl_comes_from_config_and_the_secrets_from_env():
    access = resolve_kafka(SASL_SSL, environ=SECRETS)
    assert access.kafka_python() == {
        "bootstrap_servers": "b1:9093,b2:9093", "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc-feedloop", "sasl_plain_password": "s3cr3t", "ssl_check_hostname": True,
        "ssl_cafile": CA}
    assert access.confluent() == {
        "bootstrap.servers": "b1:9093,b2:9093", "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "svc-feedloop", "sasl.password": "s3cr3t", "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": CA}
    assert "s3cr3t" not in repr(access)


def test_inside_airflow_the_connection_overrides_config_field_by_field(monkeypatch, inside_airflow):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    _kafka_connection(monkeypatch, login="conn-user", password="conn-pass",
                      extra={"bootstrap.servers": "kafka.prod:9094", "sasl.mechanism": "SCRAM-SHA-256",
                             "ssl.endpoint.identification.algorithm": "none"})
    access = resolve_kafka(SASL_SSL)
    assert access.source == "Airflow Connection 'feedloop_kafka'"
    assert access.confluent() == {
        "bootstrap.servers": "kafka.prod:9094", "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-256",
        "sasl.username": "conn-user", "sasl.password": "conn-pass", "ssl.endpoint.identification.algorithm": "none",
        "ssl.ca.location": CA}


def test_a_connection_may_carry_the_sasl_user_in_its_extras(monkeypatch, inside_airflow):
    _kafka_connection(monkeypatch, extra={"bootstrap.servers": "k:9092", "security.protocol": "SASL_PLAINTEXT",
                                          "sasl.mechanisms": "PLAIN", "sasl.username": "u", "sasl.password": "p"})
    options = resolve_kafka(KafkaSettings()).kafka_python()
    assert options == {"bootstrap_servers": "k:9092", "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                       "sasl_plain_username": "u", "sasl_plain_password": "p"}


def test_inside_airflow_without_the_connection_config_and_env_are_used(inside_airflow):
    assert resolve_kafka(SASL_SSL, environ=SECRETS).source == "kafka settings"


def test_outside_airflow_a_kafka_connection_in_the_environment_is_not_read(monkeypatch):
    _kafka_connection(monkeypatch, extra={"bootstrap.servers": "elsewhere:9092"})
    assert resolve_kafka(KafkaSettings(), environ={}).bootstrap_servers == "127.0.0.1:9092"


def test_mutual_tls_maps_to_both_clients(client_cert):
    cert, key = client_cert
    access = KafkaAccess("b:9093", "test", security_protocol="SSL", ssl_cafile=CA, ssl_certfile=cert,
                         ssl_keyfile=key, ssl_key_password="kp").check()
    assert {k: v for k, v in access.kafka_python().items() if k.startswith("ssl_")} == {
        "ssl_check_hostname": True, "ssl_cafile": CA, "ssl_certfile": cert, "ssl_keyfile": key, "ssl_password": "kp"}
    assert {k: v for k, v in access.confluent().items() if k.startswith("ssl.")} == {
        "ssl.endpoint.identification.algorithm": "https", "ssl.ca.location": CA, "ssl.certificate.location": cert,
        "ssl.key.location": key, "ssl.key.password": "kp"}


@pytest.mark.parametrize("access,message", [
    pytest.param(KafkaAccess("b:1", "cfg", security_protocol="SASL_SSL", sasl_username="u", sasl_password="p"),
                 r"cfg: security protocol SASL_SSL needs a SASL mechanism, one of PLAIN", id="sasl-without-mechanism"),
    pytest.param(KafkaAccess("b:1", "cfg", security_protocol="SASL_SSL", sasl_mechanism="GSSAPI", sasl_username="u",
                             sasl_password="p"), r"needs a SASL mechanism.*got 'GSSAPI'", id="unsupported-mechanism"),
    pytest.param(KafkaAccess("b:1", "cfg", security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u"),
                 r"SASL PLAIN needs a username and a password.*KAFKA_SASL_PASSWORD", id="sasl-without-password"),
    pytest.param(KafkaAccess("b:1", "cfg", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p"),
                 r"SASL settings given but security protocol is PLAINTEXT", id="sasl-on-plaintext"),
    pytest.param(KafkaAccess("b:1", "cfg", ssl_cafile=CA), r"TLS files given but security protocol is PLAINTEXT",
                 id="ca-on-plaintext"),
    pytest.param(KafkaAccess("b:1", "cfg", security_protocol="SSL", ssl_certfile="c.pem"),
                 r"needs both ssl.certificate.location and ssl.key.location", id="cert-without-key"),
    pytest.param(KafkaAccess("b:1", "cfg", security_protocol="TLS"), r"security protocol 'TLS' is not one of",
                 id="unknown-protocol"),
])
def test_combinations_no_client_can_use_are_clear_errors(access, message):
    with pytest.raises(CredentialsError, match=message):
        access.check()


@pytest.mark.parametrize("extra,message", [
    pytest.param({"bootstrap.server": "b:1"}, r"extra 'bootstrap.server' not supported; use bootstrap.servers",
                 id="misspelt-extra"),
    pytest.param({"ssl.endpoint.identification.algorithm": "yes"},
                 r"extra 'ssl.endpoint.identification.algorithm' must be https or none \(got 'yes'\)",
                 id="bad-hostname-check"),
    pytest.param({"bootstrap.servers": ["b:1"]}, r"extra 'bootstrap.servers' must be a string \(got list\)",
                 id="non-string-extra"),
])
def test_bad_connection_extras_are_clear_errors(extra, message):
    base = KafkaAccess("b:1", "cfg")
    with pytest.raises(CredentialsError, match=r"Airflow Connection 'feedloop_kafka': " + message):
        apply_connection(base, conn_id="feedloop_kafka", login=None, password=None, extra=extra)


def test_the_kafka_python_clients_get_the_resolved_settings(monkeypatch):
    """streams builds every kafka-python client from the same resolution (no broker needed to check the options)."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    producer = streams.producer(SASL_SSL, api_version=(2, 5))
    try:
        cfg = producer.config
        assert (cfg["security_protocol"], cfg["sasl_mechanism"], cfg["sasl_plain_username"], cfg["ssl_cafile"]) == (
            "SASL_SSL", "SCRAM-SHA-512", "svc-feedloop", CA)
    finally:
        producer.close(timeout=0)


def test_consumers_skip_the_records_of_aborted_transactions():
    """Tansu never stores an aborted transaction's records, so only the option itself can be checked here."""
    consumer = streams.consumer(KafkaSettings(bootstrap_servers="127.0.0.1:1"), api_version=(2, 5))
    try:
        assert consumer.config["isolation_level"] == "read_committed"
    finally:
        consumer.close(autocommit=False)


def _kafka_python_keys() -> set[str]:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient

    return set(KafkaProducer.DEFAULT_CONFIG) & set(KafkaConsumer.DEFAULT_CONFIG) & set(KafkaAdminClient.DEFAULT_CONFIG)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=20)


@st.composite
def valid_access(draw) -> KafkaAccess:
    protocol = draw(st.sampled_from(SECURITY_PROTOCOLS))
    sasl = protocol.startswith("SASL_")
    tls = protocol.endswith("SSL")
    return KafkaAccess(
        bootstrap_servers=draw(st.sampled_from(["127.0.0.1:1", "a:1,b:2"])), source="fuzz",
        security_protocol=protocol,
        sasl_mechanism=draw(st.sampled_from(SASL_MECHANISMS)) if sasl else None,
        sasl_username=draw(_text) if sasl else None, sasl_password=draw(_text) if sasl else None,
        ssl_cafile=draw(st.sampled_from([None, CA])) if tls else None,
        ssl_check_hostname=draw(st.booleans()))


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(access=valid_access())
def test_every_valid_setting_means_the_same_to_both_clients_and_librdkafka_accepts_it(access):
    from confluent_kafka import Producer

    access.check()
    py, rd = access.kafka_python(), access.confluent()
    assert set(py) <= _kafka_python_keys()
    assert py["bootstrap_servers"] == rd["bootstrap.servers"] and py["security_protocol"] == rd["security.protocol"]
    assert py.get("sasl_mechanism") == rd.get("sasl.mechanisms")
    assert (py.get("sasl_plain_username"), py.get("sasl_plain_password")) == (rd.get("sasl.username"),
                                                                               rd.get("sasl.password"))
    assert py.get("ssl_cafile") == rd.get("ssl.ca.location")
    if access.security_protocol.endswith("SSL"):
        assert py["ssl_check_hostname"] == (rd["ssl.endpoint.identification.algorithm"] == "https")
    Producer({**rd, "log_level": 0})  # librdkafka checks names and values (and loads the CA) when built


_extra_keys = st.sampled_from(["bootstrap.servers", "security.protocol", "sasl.mechanism", "sasl.mechanisms",
                               "sasl.username", "sasl.password", "ssl.ca.location", "ssl.certificate.location",
                               "ssl.key.location", "ssl.key.password", "ssl.endpoint.identification.algorithm",
                               "group.id", "SASL.MECHANISM", ""])
_extra_values = st.one_of(_text, st.sampled_from(SECURITY_PROTOCOLS + SASL_MECHANISMS + ("https", "none")),
                          st.integers(), st.booleans(), st.none(), st.lists(st.integers(), max_size=2))


@hsettings(max_examples=200, deadline=None)
@given(extra=st.dictionaries(_extra_keys, _extra_values, max_size=6), login=st.none() | _text,
       password=st.none() | _text)
def test_any_connection_is_usable_or_a_credentials_error_never_a_crash(extra, login, password):
    try:
        access = apply_connection(KafkaAccess("b:1", "cfg"), conn_id="feedloop_kafka", login=login,
                                  password=password, extra=extra).check()
    except CredentialsError as exc:
        assert "feedloop_kafka" in str(exc)
        return
    assert access.source == "Airflow Connection 'feedloop_kafka'"
    access.kafka_python(), access.confluent()
