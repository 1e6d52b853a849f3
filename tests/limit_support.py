"""What the limit-state tests share: a clock they move by hand, and draining an allowance."""

from __future__ import annotations

from voxrouter.router.limits.state import KeyLimits, LimitState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def drain(state: LimitState, key: str, limits: KeyLimits, most: int = 10_000) -> int:
    """Admit until refused; how many passed."""
    for passed in range(most):
        if not (await state.admit(key, limits)).allowed:
            return passed
    raise AssertionError(f"{most} requests passed a limit of {limits}")
