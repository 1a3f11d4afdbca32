"""The console's settings (``LOYALTY_CONSOLE_*``)."""

from __future__ import annotations

import secrets

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_CONSOLE_", extra="ignore")

    # The gateway's gRPC address (host:port).
    gateway: str = "127.0.0.1:50051"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # Signs the session cookie. A fresh one per process when unset: sessions then end with the
    # process (fine for `make run`; set it in a deployment with more than one replica).
    secret_key: str = Field(default_factory=lambda: secrets.token_urlsafe(32), min_length=16)
    # Send the session cookie over HTTPS only (on behind TLS).
    secure_cookies: bool = False
    # A saga's trace, by its trace id (Jaeger's UI by default).
    trace_url_template: str = "http://localhost:16686/trace/{trace_id}"
    # Seconds a gateway call may take before the page says the gateway does not answer.
    call_timeout: float = Field(default=10.0, gt=0)
