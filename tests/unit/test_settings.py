"""The gateway's settings from the environment (router/settings.py)."""

from __future__ import annotations

import pytest

from voxrouter.router.settings import Settings


def test_stripe_settings_come_from_the_environment_and_stay_out_of_reprs(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_from_env")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_from_env")
    monkeypatch.setenv("STRIPE_API_BASE", "http://127.0.0.1:1")
    settings = Settings.from_env()
    assert (settings.stripe_api_key, settings.stripe_webhook_secret, settings.stripe_api_base) == (
        "sk_test_from_env",
        "whsec_from_env",
        "http://127.0.0.1:1",
    )
    assert "sk_test_from_env" not in repr(settings) and "whsec_from_env" not in repr(settings)
    monkeypatch.setenv("STRIPE_API_KEY", "")
    assert Settings.from_env().stripe_api_key is None
