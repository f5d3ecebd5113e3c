"""Settings base shared by the services: one typed Settings per service, INTELLIOPTICS_ prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "placeholder", "please-change-me"})


class BaseServiceSettings(BaseSettings):
    """Fields every service has. Subclasses add their own and keep the prefix."""

    model_config = SettingsConfigDict(env_prefix="INTELLIOPTICS_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"

    def secret_fields(self) -> dict[str, str | None]:
        """Secrets to check for placeholders; subclasses return theirs."""
        return {}

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> BaseServiceSettings:
        if self.environment == "production":
            for name, value in self.secret_fields().items():
                if value is not None and value.strip().lower() in PLACEHOLDER_SECRETS:
                    raise ValueError(
                        f"INTELLIOPTICS_{name.upper()} is a placeholder; set a real secret outside development"
                    )
        return self
