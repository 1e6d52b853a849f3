"""The listening tests' word comparison (tests/listening.py): written either way, the same words."""

from __future__ import annotations

import pytest

from tests.listening import normalise, word_error_rate


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("in 2024", "in twenty twenty-four"),
        ("at 7:30", "at seven thirty"),
        ("the 3rd time", "the third time"),
        ("on March 14, 2025.", "on March fourteenth, twenty twenty-five"),
        ("for $9.", "for nine dollars"),
        ("50% off", "fifty percent off"),
        ("Dr. Miller", "Doctor Miller"),
        ("12 apples", "twelve apples"),
    ],
)
def test_written_and_spoken_forms_compare_equal(written: str, said: str) -> None:
    assert normalise(written) == normalise(said)
    assert word_error_rate(said, written) == 0.0


def test_a_wrong_word_is_an_error() -> None:
    assert word_error_rate("the keys to the blue car", "the keys to the blow car") == pytest.approx(1 / 6)
    assert word_error_rate("can you call Sarah before the meeting starts", "can you call Sarah before meeting starts") == pytest.approx(1 / 8)
