"""S3 and Kafka credentials for every client feedloop builds: boto3, DuckDB, kafka-python, confluent-kafka.

Why one module: each client used to find its own keys (DuckDB fell back to a baked-in key with no
session token, so dataset builds failed under an instance role) and nothing read the Airflow
Connections the deployment files define. The order, the same for every client:

1. inside Airflow (a task, or the api-server serving the UI): the Connection named in config
   (`s3.airflow_conn_id`, `kafka.airflow_conn_id`), read through Airflow: for S3 the Amazon provider's
   AwsBaseHook (login / password; extras role_arn, aws_session_token, endpoint_url, region_name); for
   Kafka a generic Connection whose extras are librdkafka settings, login / password = SASL user / password;
2. the environment and config: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN;
   KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD / KAFKA_SSL_KEY_PASSWORD with the `kafka:` settings;
3. the AWS default chain (profile, SSO, web identity, container or instance role);
4. nothing found and the endpoint is on this machine (the embedded SeaweedFS, which has no identity
   configured): anonymous, unsigned requests. Anywhere else a clear error says where to put credentials.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, get_args
from urllib.parse import urlparse

from feedloop.core.config import KafkaSecurityProtocol, KafkaSettings, S3Settings, SaslMechanism

log = logging.getLogger(__name__)


class CredentialsError(ValueError):
    """Credentials are missing or inconsistent; the message names the setting and the fix."""


def in_airflow() -> bool:
    """True in an Airflow process that reads Connections: a task (a worker, `airflow dags test`,
    `dag.test()`) or a server component (the api-server serving the feedloop UI, scheduler, triggerer).

    Why not import Airflow to ask: the serving pods have no Airflow, and the CLI must not pay for it.
    A task process has already connected its task runner to the supervisor; Airflow's servers mark
    their environment (_AIRFLOW_PROCESS_CONTEXT=server) to read Connections from the metadata DB.
    """
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return (getattr(runner, "SUPERVISOR_COMMS", None) is not None
            or os.environ.get("_AIRFLOW_PROCESS_CONTEXT") == "server")


@dataclass(frozen=True)
class S3Credentials:
    """Where to reach S3 and how to sign: keys (with a session token for temporary ones) or anonymous."""

    endpoint_url: str                       # "" = the AWS endpoint of `region`
    region: str
    source: str                             # for logs and errors, never a secret
    access_key: str | None = None           # None = anonymous (unsigned requests)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    # The boto3 session they came from: its clients refresh temporary keys themselves (a pod runs for
    # days, an instance role's keys last hours); the frozen fields above are for DuckDB.
    session: Any = field(default=None, repr=False, compare=False)

    @property
    def anonymous(self) -> bool:
        return self.access_key is None


def resolve_s3(s3: S3Settings) -> S3Credentials:
    """The credentials and endpoint for `s3`, by the order in the module docstring."""
    if in_airflow():
        found = _s3_from_connection(s3)
    else:
        found = _s3_from_chain(s3.endpoint_url, s3.region)
    if found.anonymous and not is_loopback(found.endpoint_url):
        raise CredentialsError(
            f"no S3 credentials for {found.endpoint_url or 'AWS S3 (' + found.region + ')'}: inside Airflow set the "
            f"Connection {s3.airflow_conn_id!r} (conn_type aws: login/password or role_arn), elsewhere set "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), an AWS "
            "profile or an instance / pod role")
    log.debug("S3 %s: credentials from %s", found.endpoint_url or found.region, found.source)
    return found


def _s3_from_chain(endpoint_url: str, region: str) -> S3Credentials:
    """Environment, then the rest of the AWS default chain (boto3's own order)."""
    import boto3

    return _frozen(boto3.Session(region_name=region), endpoint_url, region, via="")


def _s3_from_connection(s3: S3Settings) -> S3Credentials:
    """The Airflow Connection through the Amazon provider; a missing one means env / chain, as outside Airflow."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    if not _connection_exists(s3.airflow_conn_id):
        return _s3_from_chain(s3.endpoint_url, s3.region)
    hook = AwsBaseHook(aws_conn_id=s3.airflow_conn_id, client_type="s3")
    wrapper = hook.conn_config
    endpoint = wrapper.get_service_endpoint_url("s3") or s3.endpoint_url
    region = wrapper.region_name or s3.region
    return _frozen(hook.get_session(region_name=region), endpoint, region,
                   via=f"Airflow Connection {s3.airflow_conn_id!r}")


def _frozen(session, endpoint_url: str, region: str, *, via: str) -> S3Credentials:
    """The session's keys as one consistent snapshot (refreshable ones may rotate between key and token)."""
    creds = session.get_credentials()
    if creds is None:
        return S3Credentials(endpoint_url, region, source=_source(via, "anonymous: no credentials found"),
                             session=session)
    frozen = creds.get_frozen_credentials()
    method = getattr(creds, "method", "") or "unknown"
    label = "its keys" if via and method == "explicit" else f"AWS chain: {method}"
    return S3Credentials(endpoint_url, region, source=_source(via, label), access_key=frozen.access_key,
                         secret_key=frozen.secret_key, session_token=frozen.token or None, session=session)


def _source(via: str, what: str) -> str:
    return f"{via} ({what})" if via else what


def is_loopback(endpoint_url: str) -> bool:
    """An endpoint on this machine: the embedded stack, never AWS."""
    host = urlparse(endpoint_url).hostname if endpoint_url else None
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _connection_exists(conn_id: str) -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
        return True
    except AirflowNotFoundException:
        return False


SECURITY_PROTOCOLS: tuple[str, ...] = get_args(KafkaSecurityProtocol)
SASL_MECHANISMS: tuple[str, ...] = get_args(SaslMechanism)

# Connection extras (librdkafka names, as the apache-kafka provider uses them) -> KafkaAccess fields.
_EXTRA_FIELDS = {
    "bootstrap.servers": "bootstrap_servers",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_key_password",
    "ssl.endpoint.identification.algorithm": "ssl_check_hostname",
}
_ENV_SECRETS = {"sasl_username": "KAFKA_SASL_USERNAME", "sasl_password": "KAFKA_SASL_PASSWORD",
                "ssl_key_password": "KAFKA_SSL_KEY_PASSWORD"}


@dataclass(frozen=True)
class KafkaAccess:
    """How to reach and authenticate to Kafka, independent of the client library."""

    bootstrap_servers: str
    source: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True

    def check(self) -> KafkaAccess:
        """Raise CredentialsError on a combination neither client could use; returns self."""
        where = self.source
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise CredentialsError(f"{where}: security protocol {self.security_protocol!r} is not one of "
                                   f"{', '.join(SECURITY_PROTOCOLS)}")
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and self.sasl_mechanism not in SASL_MECHANISMS:
            raise CredentialsError(f"{where}: security protocol {self.security_protocol} needs a SASL mechanism, "
                                   f"one of {', '.join(SASL_MECHANISMS)} (got {self.sasl_mechanism!r})")
        if sasl and not (self.sasl_username and self.sasl_password):
            raise CredentialsError(f"{where}: SASL {self.sasl_mechanism} needs a username and a password (Connection "
                                   "login / password or extras sasl.username / sasl.password; outside Airflow "
                                   "KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD)")
        if not sasl and (self.sasl_mechanism or self.sasl_username or self.sasl_password):
            raise CredentialsError(f"{where}: SASL settings given but security protocol is {self.security_protocol}; "
                                   "use SASL_SSL (or SASL_PLAINTEXT) or remove them")
        tls_files = self.ssl_cafile or self.ssl_certfile or self.ssl_keyfile or self.ssl_key_password
        if tls_files and not self.security_protocol.endswith("SSL"):
            raise CredentialsError(f"{where}: TLS files given but security protocol is {self.security_protocol}; "
                                   "use SSL or SASL_SSL")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise CredentialsError(f"{where}: a client certificate needs both ssl.certificate.location and "
                                   "ssl.key.location")
        return self

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's KafkaProducer / KafkaConsumer / KafkaAdminClient."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers,
                                   "security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self.sasl_password)
        if self.security_protocol.endswith("SSL"):
            options["ssl_check_hostname"] = self.ssl_check_hostname
            for key, value in (("ssl_cafile", self.ssl_cafile), ("ssl_certfile", self.ssl_certfile),
                               ("ssl_keyfile", self.ssl_keyfile), ("ssl_password", self.ssl_key_password)):
                if value:
                    options[key] = value
        return options

    def confluent(self) -> dict[str, Any]:
        """Configuration entries for confluent-kafka (librdkafka)."""
        options: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers,
                                   "security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            options.update({"sasl.mechanisms": self.sasl_mechanism, "sasl.username": self.sasl_username,
                            "sasl.password": self.sasl_password})
        if self.security_protocol.endswith("SSL"):
            options["ssl.endpoint.identification.algorithm"] = "https" if self.ssl_check_hostname else "none"
            for key, value in (("ssl.ca.location", self.ssl_cafile), ("ssl.certificate.location", self.ssl_certfile),
                               ("ssl.key.location", self.ssl_keyfile), ("ssl.key.password", self.ssl_key_password)):
                if value:
                    options[key] = value
        return options


def resolve_kafka(kafka: KafkaSettings, environ: Mapping[str, str] | None = None) -> KafkaAccess:
    """Config + KAFKA_* secrets from the environment, overridden field by field by the Connection in Airflow."""
    environ = os.environ if environ is None else environ
    access = KafkaAccess(
        bootstrap_servers=kafka.bootstrap_servers, source="kafka settings",
        security_protocol=kafka.security_protocol, sasl_mechanism=kafka.sasl_mechanism,
        ssl_cafile=kafka.ssl_cafile, ssl_certfile=kafka.ssl_certfile, ssl_keyfile=kafka.ssl_keyfile,
        ssl_check_hostname=kafka.ssl_check_hostname,
        **{name: environ.get(var) or None for name, var in _ENV_SECRETS.items()})
    if in_airflow():
        conn = _kafka_connection(kafka.airflow_conn_id)
        if conn is not None:
            access = apply_connection(access, conn_id=kafka.airflow_conn_id, login=conn.login,
                                      password=conn.password, extra=conn.extra_dejson)
    return access.check()


def apply_connection(access: KafkaAccess, *, conn_id: str, login: str | None, password: str | None,
                     extra: Mapping[str, Any]) -> KafkaAccess:
    """Overlay a Kafka Connection: extras in librdkafka names; login / password are the SASL user / password.

    An extra feedloop does not know is an error (a misspelt key must not silently fall back).
    """
    where = f"Airflow Connection {conn_id!r}"
    unknown = sorted(set(extra) - set(_EXTRA_FIELDS))
    if unknown:
        raise CredentialsError(f"{where}: extra {', '.join(map(repr, unknown))} not supported; use "
                               f"{', '.join(sorted(_EXTRA_FIELDS))}")
    updates: dict[str, Any] = {"source": where}
    if login:
        updates["sasl_username"] = login
    if password:
        updates["sasl_password"] = password
    for key, value in extra.items():
        name = _EXTRA_FIELDS[key]
        if name == "ssl_check_hostname":
            if str(value).lower() not in ("https", "none"):
                raise CredentialsError(f"{where}: extra 'ssl.endpoint.identification.algorithm' must be https or "
                                       f"none (got {value!r})")
            value = str(value).lower() == "https"
        elif not isinstance(value, str):
            raise CredentialsError(f"{where}: extra {key!r} must be a string (got {type(value).__name__})")
        updates[name] = value
    return replace(access, **updates)


def _kafka_connection(conn_id: str):
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None

