"""Dollars as people type and read them, micro-dollars as the wallet counts them: Decimal only, never floats."""

from __future__ import annotations

import decimal

MICROS_PER_USD = 1_000_000
MICROS_PER_CENT = 10_000
_SHOWN = decimal.Decimal("0.0001")


def usd_to_micros(value: str) -> int:
    """`"2.5"` -> 2_500_000; ValueError for anything that is not a non-negative amount with at most 6 decimals."""
    try:
        micros = decimal.Decimal(value.strip().removeprefix("$")) * MICROS_PER_USD
    except decimal.InvalidOperation:
        raise ValueError(f"{value!r} is not an amount in dollars") from None
    if not micros.is_finite() or micros < 0 or micros != micros.to_integral_value():
        raise ValueError(f"{value!r}: use a non-negative amount with at most 6 decimals")
    return int(micros)


def usd_to_cents(value: str) -> int:
    """`"25"` -> 2500; ValueError unless the amount is whole cents."""
    micros = usd_to_micros(value)
    if micros % MICROS_PER_CENT:
        raise ValueError(f"{value!r}: use whole cents (at most 2 decimals)")
    return micros // MICROS_PER_CENT


def format_usd(micros: int, *, signed: bool = False) -> str:
    """1_234_550 -> "$1.2346" (4 decimals, half-even); `signed` adds "+" to amounts above zero."""
    amount = (decimal.Decimal(micros) / MICROS_PER_USD).quantize(_SHOWN, rounding=decimal.ROUND_HALF_EVEN)
    sign = "-" if amount < 0 else "+" if signed and amount > 0 else ""
    return f"{sign}${abs(amount)}"
