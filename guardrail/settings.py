"""Every `GUARDRAIL_*` setting the package reads, in one class: where things are, how the sidecar reaches
its upstream, and the secrets; what decides about users belongs in the policy file instead.

Precedence: arguments given in code (and `guardrail serve`'s flags) > environment > a file of the same name
in the secrets directory (`GUARDRAIL_SECRETS_DIR`, else /run/secrets; a directory that is not there is
skipped) > the defaults here. `Settings.load()` reads them, with an error naming the variable on a bad value;
docs/configuration.md is generated from this class (`python -m guardrail.settings_table`).

To add a setting: a field with a `description` (it becomes the docs' row), then regenerate the table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from pydantic import Field, SecretStr, ValidationError, create_model, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from guardrail.errors import GuardrailError

PREFIX = "GUARDRAIL_"
SECRETS_DIR_ENV = "GUARDRAIL_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/run/secrets"
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
_Model = TypeVar("_Model", bound=BaseSettings)


class SettingsProblem(GuardrailError):
    """A setting with a value that cannot be used: the message names the variable and what it takes."""


class _FromEnvironmentAndSecrets(BaseSettings):
    """The sources and their order, shared by `Settings` and a secret named by the policy (`secret`)."""

    # An empty variable counts as unset, as `VAR=` in a shell script or a manifest usually means.
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", env_ignore_empty=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No .env file: the environment is the deployment's (a container's, a unit's), not a file beside the code.
        directory = Path(os.environ.get(SECRETS_DIR_ENV) or DEFAULT_SECRETS_DIR)
        if not directory.exists():  # most machines have no /run/secrets: nothing to read there
            return init_settings, env_settings
        return init_settings, env_settings, SecretsSettingsSource(settings_cls, secrets_dir=directory)


class Settings(_FromEnvironmentAndSecrets):
    # -- what to serve, and where from ---------------------------------------------------------------
    config: str = Field("config/guardrail.yaml", description="The policy file (`guardrail serve --config`).")
    store: SecretStr = Field(
        SecretStr("memory://"),
        description="The store: `memory://`, `redis://…`, `rediss://…`, or `redis+cluster://h:p,h:p` (a secret, "
        "as a Redis URL may hold a password).",
    )
    watch: bool = Field(False, description="`guardrail serve` also re-reads the policy file when it changes.")
    candidate: str | None = Field(
        None, description="A policy file evaluated beside the live one on sampled requests (`--candidate`)."
    )
    candidate_rate: float = Field(0.1, ge=0, le=1, description="The share of guarded requests the candidate decides.")
    record_cases: str | None = Field(
        None, description="A file sampled guarded requests are appended to, as cases for `guardrail diff`."
    )
    record_rate: float = Field(0.01, ge=0, le=1, description="The share of guarded requests recorded.")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="`guardrail serve` answers `/metrics` on this port only, not the public one."
    )
    log_level: LogLevel | None = Field(
        None,
        description="JSON log level: `debug`, `info` (a line per guarded request), `warning`, `error` or "
        "`critical`. Unset: `info`, and `warning` for `guardrail demo`.",
    )
    tracing: Literal["auto", "otel", "off"] = Field(
        "auto",
        description="Traces: `auto` (traced when OpenTelemetry is configured by its `OTEL_*` variables or the host "
        'app), `otel` (always; needs the `otel` extra) or `off` (docs/operations.md, "Traces").',
    )
    pure_python: bool = Field(
        False, description="Run the per-item loop in Python even where the C one is built, to compare or debug."
    )
    # -- the upstream (`guardrail serve`) ----------------------------------------------------------------
    upstream: str | None = Field(
        None, description="The service behind the sidecar, `http://` or `https://`, maybe with a path prefix."
    )
    upstream_timeout: float = Field(
        30.0, gt=0, description="Seconds the upstream may take to answer, or to send the next piece of it."
    )
    upstream_ca_file: Path | None = Field(
        None,
        description="A PEM file of the CA certificates an `https://` upstream's certificate is verified against, "
        "instead of certifi's public roots.",
    )
    upstream_client_cert: Path | None = Field(
        None,
        description="A PEM client certificate (chain) the sidecar presents to an upstream asking for one (mTLS). "
        "It may hold the key too.",
    )
    upstream_client_key: Path | None = Field(
        None, description="The PEM private key of the client certificate, when it is not in the certificate's file."
    )
    upstream_server_name: str | None = Field(
        None,
        description="The name the upstream's certificate must carry, and sent in SNI, when it differs from the "
        "URL's host (an IP address, say).",
    )
    # -- secrets -------------------------------------------------------------------------------------------
    jwt_key: SecretStr | None = Field(
        None,
        description="The HMAC secret or PEM public key verifying bearer tokens (`identity.jwt.key_env`, whose "
        "default this is; another name there is read the same way).",
    )
    csrf_key: SecretStr | None = Field(
        None,
        description="The key signing the controls page's forms. Unset: one per process (per `guardrail serve`). "
        "Set the same on every replica.",
    )
    log_key: SecretStr | None = Field(
        None,
        description="The key of the user hash in log lines. Unset: one per process. Set the same everywhere to "
        "follow one user across workers.",
    )
    secrets_dir: Path = Field(
        Path(DEFAULT_SECRETS_DIR),
        description="A directory of secret files, each named like its variable (`GUARDRAIL_CSRF_KEY`). "
        "Any setting may come from one; the environment wins.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("jwt_key", "csrf_key", "log_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value  # (an empty secret file)

    @classmethod
    def load(cls, **given: Any) -> Settings:
        """The settings, or `SettingsProblem` naming each variable with a bad value and what it takes."""
        return _load(cls, given)

    def secret(self, name: str) -> str | None:
        """The secret in the environment variable `name` (a policy's `identity.jwt.key_env`), else in the
        file `name` of the secrets directory: None when neither holds one."""
        if name.upper() == f"{PREFIX}JWT_KEY":
            return None if self.jwt_key is None else self.jwt_key.get_secret_value()
        named = create_model(
            "NamedSecret",
            __base__=_FromEnvironmentAndSecrets,
            value=(SecretStr | None, Field(None, validation_alias=name)),
        )
        value: SecretStr | None = _load(named, {}).value  # type: ignore[attr-defined]
        return None if value is None else value.get_secret_value()


def _load(model: type[_Model], given: dict[str, Any]) -> _Model:
    try:
        return model(**given)
    except ValidationError as exc:
        raise SettingsProblem("; ".join(_problem(model, error) for error in exc.errors())) from None
    except SettingsError as exc:  # the secrets directory is a file, or a secret file cannot be read
        raise SettingsProblem(f"{SECRETS_DIR_ENV}: {_cause(exc)}; give a directory of secret files") from None
    except OSError as exc:
        raise SettingsProblem(f"{SECRETS_DIR_ENV}: {_cause(exc)}") from None


def variable(field: str, model: type[BaseSettings] = Settings) -> str:
    """The environment variable a field is read from."""
    alias = model.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else f"{PREFIX}{field.upper()}"


def _problem(model: type[BaseSettings], error: Any) -> str:
    field = str(error["loc"][0])
    name = variable(field, model) if field in model.model_fields else f"{PREFIX}{field.upper()}"
    message = str(error["msg"])
    if is_secret(model, field) or "input" not in error:
        return f"{name}: {message}"  # a secret's value is not repeated, even a wrong one
    return f"{name}: {message}, not {error['input']!r}"


def is_secret(model: type[BaseSettings], field: str) -> bool:
    annotation = model.model_fields[field].annotation if field in model.model_fields else None
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _cause(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    cause = exc.__cause__ or exc.__context__
    return _cause(cause) if isinstance(cause, OSError) else str(exc)
