"""The console's knobs, read once from ``TEND_CONSOLE_*`` environment variables."""

from __future__ import annotations

import secrets

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    """Where the APIs are, and how sign-in sessions are kept."""

    model_config = SettingsConfigDict(env_prefix="TEND_CONSOLE_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = 8000
    ingest_url: str = "http://127.0.0.1:8001"
    scoring_url: str = "http://127.0.0.1:8002"
    outreach_url: str = "http://127.0.0.1:8003"
    # Encrypts and authenticates the session cookie. Unset: a random one per process, so
    # sessions end when the console restarts (and several workers would not share them).
    session_secret: SecretStr = Field(
        default_factory=lambda: SecretStr(secrets.token_urlsafe(32)), min_length=16
    )
    # A session ends this long after sign-in, whatever is done meanwhile.
    session_minutes: int = Field(480, ge=1, le=7 * 24 * 60)
    # Send the session cookie over HTTPS only: set it wherever the console is served by HTTPS.
    secure_cookies: bool = False
    # The base currency money is shown in (ingest's TEND_INGEST_BASE_CURRENCY), and the
    # locale numbers are written for.
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    locale: str = "en_US"
    # How long one API call may take before the page says the service is not answering.
    api_timeout_seconds: float = Field(10.0, gt=0)

    def insecure_defaults(self) -> list[str]:
        """What production refuses in these settings (see :mod:`shared.production`)."""
        if self.secure_cookies:
            return []
        return [
            "TEND_CONSOLE_SECURE_COOKIES is false: the session cookie would be sent over "
            "plain http too, and whoever copies it on the way is signed in; serve the "
            "console by https and set TEND_CONSOLE_SECURE_COOKIES=true"
        ]
