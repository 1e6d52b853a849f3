"""Process settings from the environment (the YAML config holds the rest)."""

from __future__ import annotations

import dataclasses
import os

from voxrouter.router.config import Config, load_config

DEFAULT_DATABASE_URL = "sqlite:///./voxrouter.db"


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    config_path: str | None = None  # None: the shipped config/default.yaml
    config: Config | None = None  # an already-loaded config (tests, embedding)
    redis_url: str | None = None  # shared limits for several replicas; None: this process's memory
    redis_prefix: str = "voxrouter"  # key prefix, so several deployments can share one Redis
    # Billing (router/billing.py). No API key: the billing routes answer 503 billing_not_configured.
    stripe_api_key: str | None = dataclasses.field(default=None, repr=False)
    stripe_webhook_secret: str | None = dataclasses.field(default=None, repr=False)  # whsec_...: verifies the webhook
    stripe_api_base: str | None = None  # another Stripe API base URL (tests: a loopback emulator)

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            database_url=os.environ.get("VOXROUTER_DATABASE_URL", DEFAULT_DATABASE_URL),
            config_path=os.environ.get("VOXROUTER_CONFIG") or None,
            redis_url=os.environ.get("VOXROUTER_REDIS_URL") or None,
            redis_prefix=os.environ.get("VOXROUTER_REDIS_PREFIX") or "voxrouter",
            stripe_api_key=os.environ.get("STRIPE_API_KEY") or None,
            stripe_webhook_secret=os.environ.get("STRIPE_WEBHOOK_SECRET") or None,
            stripe_api_base=os.environ.get("STRIPE_API_BASE") or None,
        )

    def load_config(self) -> Config:
        return self.config if self.config is not None else load_config(self.config_path)
