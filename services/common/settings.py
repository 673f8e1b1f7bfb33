"""Settings every service shares, read once from the environment at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.crypto import GENERATE_HINT, SecretBox, SecretKeyError, parse_keys

DEV_ADMIN_TOKEN = "handoff-dev-admin-token"  # noqa: S105 - published on purpose; refused outside development
# Guessing a 32-character random token online is hopeless; a short or memorable one is not.
PRODUCTION_MIN_TOKEN_CHARS = 32


class ServiceSettings(BaseSettings):
    """Base for each service's settings; subclasses add `database_url` under their own prefix."""

    # hide_input_in_errors: a refused setting's error would otherwise print every input, tokens and keys included.
    model_config = SettingsConfigDict(env_prefix="HANDOFF_", extra="ignore", frozen=True, hide_input_in_errors=True)

    service_name: str = "handoff"
    # Production unless told otherwise: a forgotten variable must fail closed (no published token, strong one
    # required); `make run` and the tests say development (or test) explicitly.
    env: Literal["development", "test", "production"] = "production"
    admin_token: SecretStr = SecretStr(DEV_ADMIN_TOKEN)
    # A read-only token for the ops dashboard and the SLA APIs, so a wall screen need not hold the admin token.
    ops_token: SecretStr | None = None
    # Fernet keys, comma-separated, newest first, that encrypt stored platform tokens and webhook signing secrets
    # (common.crypto). Required in production by the services that store such secrets.
    secret_key: SecretStr | None = None
    data_dir: Path = Path(".data")
    database_url: str = ""

    kafka_bootstrap: str = "127.0.0.1:9092"
    # A prefix for every topic and consumer group, so several stacks (or test runs) can share one cluster.
    topic_namespace: str = ""
    # Overrides the consumer group (default: namespace + "handoff-" + service); a new group replays every topic.
    consumer_group_override: str = ""
    topic_partitions: int = Field(default=6, ge=1, le=1000)
    topic_replication: int = Field(default=1, ge=1, le=5)
    # How long the broker keeps records, set on the topics Handoff creates. Lead events carry personal data, and an
    # erasure cannot reach a record already written, so they are kept only as long as a consumer could need to
    # catch up; dead letters wait longer for someone to look at them and redrive them.
    leads_topic_retention_days: float = Field(default=7, gt=0, le=3650)
    dead_letter_retention_days: float = Field(default=14, gt=0, le=3650)

    # -- Kafka client security (managed clusters); PLAINTEXT leaves the clients exactly as before -----------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    # The CA that signed the brokers' certificates; unset means the system's trust store.
    kafka_ssl_cafile: Path | None = None
    # A client certificate and key for clusters that authenticate clients by TLS (mTLS).
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True

    kafka_send_timeout_s: float = Field(default=10.0, gt=0)
    outbox_batch_size: int = Field(default=500, ge=1, le=10_000)
    # Only a safety net: a commit wakes the relay (in process; on PostgreSQL through NOTIFY from any process), so an
    # idle relay does a round this seldom. Rows written by other means (handoff-outbox redrive) wait up to this.
    outbox_poll_interval_s: float = Field(default=5.0, gt=0)
    consumer_batch_size: int = Field(default=500, ge=1, le=10_000)
    consumer_max_attempts: int = Field(default=4, ge=1, le=50)
    consumer_retry_backoff_s: float = Field(default=0.2, ge=0)
    # Offsets of applied batches are committed at most this often, busy or idle, and always on a rebalance and on
    # stop: an offset commit costs the broker ~2 ms of CPU, more than a produce request. A crash redelivers at most
    # this much, which the dedupe table absorbs. 0 commits after every batch.
    consumer_commit_interval_s: float = Field(default=1.0, ge=0, le=60)
    # A consumer with lag that has made no progress for this long is reported not ready and restarted.
    consumer_stall_s: float = Field(default=30.0, gt=0)
    # How long a processed event's id is kept to dedupe redeliveries. Keep it longer than the topics' retention
    # (Kafka's default: 7 days): a record can be redelivered, or replayed by a new group, only while it is there.
    dedupe_retention_days: float = Field(default=14.0, gt=0)
    housekeeping_interval_s: float = Field(default=300.0, gt=0)
    housekeeping_batch: int = Field(default=1000, ge=1)

    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # SQLite only: the WAL is copied into the database file (common.db_wal's checkpointer thread) once this many
    # pages wait in it, and past the second bound writers copy it in their COMMIT. A checkpoint copies a page once
    # however often it was written since, so a store whose batches rewrite the same tail pages (ingest's appends)
    # copies fewer pages a row with a higher bound; ingest sets its own (IngestSettings).
    sqlite_checkpoint_pages: int = Field(default=1000, ge=100)
    sqlite_wal_restart_pages: int = Field(default=4000, ge=400)
    # Bounds on waiting for the database. SQLite statements run on the event loop's thread, so a busy wait for
    # another process's write lock freezes the whole process for that long; PostgreSQL would wait forever on a
    # lock. A timeout is a store error: 503 on HTTP, a redelivery for a consumer.
    sqlite_busy_timeout_s: float = Field(default=5.0, gt=0, le=60)
    pg_statement_timeout_s: float = Field(default=15.0, gt=0)
    pg_lock_timeout_s: float = Field(default=5.0, gt=0)
    # Connections a database pool keeps open (PostgreSQL's, and SQLite's readers'): the requests a process serves at
    # once, so a burst reuses connections instead of opening one per request. Unset: `database_pool_size`'s choice.
    db_pool_size: int | None = Field(default=None, ge=1, le=1000)
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    migrate_on_start: bool = True

    @property
    def database_pool_size(self) -> int:
        """Connections each database pool keeps: HANDOFF_DB_POOL_SIZE, else 10 (ingest: its lead posts in flight)."""
        return self.db_pool_size or 10

    @model_validator(mode="after")
    def _wal_restart_past_checkpoint(self) -> ServiceSettings:
        if self.sqlite_wal_restart_pages <= self.sqlite_checkpoint_pages:
            raise ValueError("HANDOFF_SQLITE_WAL_RESTART_PAGES must be larger than HANDOFF_SQLITE_CHECKPOINT_PAGES")
        return self

    @field_validator("ops_token", mode="before")
    @classmethod
    def _empty_ops_token_is_unset(cls, value: object) -> object:
        # An empty variable (compose's `${HANDOFF_OPS_TOKEN:-}`) means no ops token, not an empty one.
        return None if value == "" else value

    # Services that keep secrets in their store (ingest's platform tokens, routing's signing secrets) set this.
    stores_secrets: ClassVar[bool] = False

    @field_validator("secret_key", mode="before")
    @classmethod
    def _empty_secret_key_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _secret_key_is_usable(self) -> ServiceSettings:
        if self.secret_key is not None:
            try:
                parse_keys(self.secret_key.get_secret_value())
            except SecretKeyError as exc:
                raise ValueError(str(exc)) from None
        elif self.stores_secrets and self.env == "production":
            raise ValueError(
                "HANDOFF_SECRET_KEY is not set: production stores platform tokens and webhook signing secrets "
                f"encrypted under it. Generate one with {GENERATE_HINT} (keep it safe: without it the stored "
                "secrets cannot be read), or set HANDOFF_ENV=development for a local run"
            )
        return self

    def secret_box(self) -> SecretBox:
        """The cipher for stored secrets; without HANDOFF_SECRET_KEY (development, tests) the published dev key."""
        return SecretBox.from_setting(self.secret_key.get_secret_value() if self.secret_key else None)

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> ServiceSettings:
        # A half-configured client would fail at its first connection with an opaque handshake error.
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()
        ):
            raise ValueError(
                f"HANDOFF_KAFKA_SECURITY_PROTOCOL={protocol} needs HANDOFF_KAFKA_SASL_USERNAME and "
                "HANDOFF_KAFKA_SASL_PASSWORD"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("HANDOFF_KAFKA_SSL_CERTFILE and HANDOFF_KAFKA_SSL_KEYFILE are set together")
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile)
        if not protocol.endswith("SSL") and any(f is not None for f in tls_files):
            raise ValueError(
                f"HANDOFF_KAFKA_SSL_* files are set but HANDOFF_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS "
                "(use SSL or SASL_SSL)"
            )
        return self

    # A subclass must not define a validator of this name: pydantic would run only the subclass's (ingest's once
    # did, and production started with a short token).
    @model_validator(mode="after")
    def _check_admin_token_for_the_mode(self) -> ServiceSettings:
        token = self.admin_token.get_secret_value()
        if self.env == "production" and "admin_token" not in self.model_fields_set:
            raise ValueError(
                "HANDOFF_ADMIN_TOKEN is not set; production needs a random secret of at least "
                f"{PRODUCTION_MIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`), "
                "or set HANDOFF_ENV=development for a local run"
            )
        if self.env == "production" and token == DEV_ADMIN_TOKEN:
            raise ValueError("HANDOFF_ADMIN_TOKEN is the published development token; set a secret token in production")
        if self.env == "production" and len(token) < PRODUCTION_MIN_TOKEN_CHARS:
            raise ValueError(
                f"HANDOFF_ADMIN_TOKEN is {len(token)} characters; production needs a random secret of at least "
                f"{PRODUCTION_MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)"
            )
        if len(token) < 16:
            raise ValueError("HANDOFF_ADMIN_TOKEN must be at least 16 characters")
        if self.ops_token is not None and len(self.ops_token.get_secret_value()) < 16:
            raise ValueError("HANDOFF_OPS_TOKEN must be at least 16 characters")
        return self

    def resolved_database_url(self) -> str:
        """The configured URL, or a SQLite file under the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{self.service_name}.db').resolve()}"

    def topic(self, name: str) -> str:
        """The topic name with this deployment's namespace."""
        return f"{self.topic_namespace}{name}"

    @property
    def consumer_group(self) -> str:
        return self.consumer_group_override or f"{self.topic_namespace}handoff-{self.service_name}"
