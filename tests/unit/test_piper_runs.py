"""Piper's phoneme runs (`phoneme_runs`): bounded, and cut where the text pauses where it can.
A run cut mid-phrase is spoken with a sentence's falling end ("and leave a | little" was heard as
"and leave it. Little"), so a clause mark in the run's second half wins over the last space."""

from __future__ import annotations

from voxrouter.local_engines.piper import phoneme_runs

SENTENCE = list("ænd ðə ɹˈoʊdz mˈeɪ biː ˈaɪsi bᵻfˌɔːɹ sˈʌnɹaɪz, sˌoʊ dɹˈaɪv slˈoʊli ænd lˈiːv ɐ lˈɪɾəl ˈɜːlɪɚ.")


def _text(runs: list[list[str]]) -> list[str]:
    return ["".join(run) for run in runs]


def test_a_run_that_fits_is_the_sentence_without_edge_spaces() -> None:
    assert _text(phoneme_runs(SENTENCE, 500)) == ["".join(SENTENCE)]
    assert phoneme_runs(list("   "), 10) == [] and phoneme_runs([], 10) == []


def test_a_long_sentence_is_cut_after_its_comma_not_at_the_last_space() -> None:
    comma = SENTENCE.index(",")
    most = comma + 20  # the comma is in the run's second half; spaces follow it within reach
    runs = _text(phoneme_runs(SENTENCE, most))
    assert runs[0].endswith("sˈʌnɹaɪz,")
    assert "".join(runs).replace(" ", "") == "".join(SENTENCE).replace(" ", "")
    assert all(len(run) <= most for run in runs)


def test_a_comma_early_in_the_run_loses_to_the_last_space() -> None:
    phonemes = list("ðə ɹˈoʊdz, ænd ðə hˈɪlz ænd ðə vˈæli ænd ðə tˈaʊn")  # the comma at 9 of a 30-phoneme run
    runs = _text(phoneme_runs(phonemes, 30))
    assert runs[0] == "ðə ɹˈoʊdz, ænd ðə hˈɪlz ænd ðə"  # the last space within 30, not the comma
    assert all(len(run) <= 30 and not run.startswith(" ") and not run.endswith(" ") for run in runs)


def test_text_without_spaces_or_marks_is_cut_between_phonemes() -> None:
    runs = phoneme_runs(list("ɕ" * 300), 128)
    assert [len(run) for run in runs] == [128, 128, 44]
