"""The remote adapters' shared HTTP helpers (providers/_http.py)."""

from __future__ import annotations

import pytest


def test_path_segment_encodes_one_segment_and_refuses_dots() -> None:
    from voxrouter.providers._http import path_segment
    from voxrouter.providers.base import ProviderError

    assert path_segment("a/../b?c#d", provider="p", field="voice") == "a%2F..%2Fb%3Fc%23d"
    assert path_segment("21m00Tcm4TlvDq8ikWAM", provider="p", field="voice") == "21m00Tcm4TlvDq8ikWAM"
    for bad in ("", ".", "..", "a\nb"):
        with pytest.raises(ProviderError):
            path_segment(bad, provider="p", field="voice")
