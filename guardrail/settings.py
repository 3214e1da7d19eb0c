"""Settings from the environment (prefix `GUARDRAIL_`), for what does not belong in the policy file:
where things are, and secrets. Precedence: arguments given in code > environment > these defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GUARDRAIL_", extra="ignore")

    config: str = "config/guardrail.yaml"  # GUARDRAIL_CONFIG: the policy file
    store: str = "memory://"  # GUARDRAIL_STORE: memory://, redis://..., rediss://..., redis+cluster://h:p,h:p
    upstream: str | None = None  # GUARDRAIL_UPSTREAM: the service behind the sidecar
    # GUARDRAIL_UPSTREAM_TIMEOUT: seconds the upstream may take to answer, or to send the next bytes.
    upstream_timeout: float = Field(default=30.0, gt=0)
    watch: bool = False  # GUARDRAIL_WATCH: the sidecar re-reads the policy file when it changes
    # GUARDRAIL_METRICS_PORT: the sidecar serves /metrics on this port (same host), and not on its public one.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # GUARDRAIL_CANDIDATE: a policy file evaluated beside the live one on a sample of guarded requests.
    candidate: str | None = None
    candidate_rate: float = Field(default=0.1, ge=0, le=1)  # GUARDRAIL_CANDIDATE_RATE: the share sampled
    # GUARDRAIL_RECORD_CASES: a file to which sampled guarded requests are appended as cases for `guardrail diff`.
    record_cases: str | None = None
    record_rate: float = Field(default=0.01, ge=0, le=1)  # GUARDRAIL_RECORD_RATE: the share recorded
    # GUARDRAIL_TRACING: auto (traced when OpenTelemetry is configured), otel or off (docs/operations.md "Traces").
    tracing: Literal["auto", "otel", "off"] = "auto"
