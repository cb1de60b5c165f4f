"""failure_text: the official first line, the traceback after it, bounded as ack_fail keeps it."""

from __future__ import annotations

from omniq_fast._failures import MAX_FAILURE_BYTES, failure_text


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def _deep(n: int) -> None:
    if n == 0:
        raise KeyError("innermost é")
    _deeper(n - 1)  # two functions in turn: Python folds a frame repeated in a row


def _deeper(n: int) -> None:
    _deep(n)


def test_short_form_is_the_official_line() -> None:
    assert failure_text(_raised(ValueError("boom")), traceback=False) == "ValueError: boom"
    assert failure_text(_raised(RuntimeError()), traceback=False) == "RuntimeError: "


def test_traceback_follows_the_first_line() -> None:
    text = failure_text(_raised(ValueError("boom\nsecond line")))
    lines = text.splitlines()
    assert lines[0] == "ValueError: boom"
    assert lines[2] == "Traceback (most recent call last):"
    assert "in _raised" in text and text.endswith("ValueError: boom\nsecond line")


def test_long_traceback_keeps_its_end_within_the_bound() -> None:
    try:
        _deep(300)
    except KeyError as exc:
        text = failure_text(exc)
    data = text.encode()
    assert len(data) <= MAX_FAILURE_BYTES
    assert len(data) > MAX_FAILURE_BYTES - 200  # the budget is used, not wasted
    assert text.startswith("KeyError: 'innermost é'\n… (traceback cut")
    assert text.endswith('raise KeyError("innermost é")')  # the innermost frame survives


def test_huge_message_is_cut_on_a_character_boundary() -> None:
    text = failure_text(_raised(ValueError("é" * 5000)))
    data = text.encode()
    assert len(data) <= MAX_FAILURE_BYTES
    data.decode()  # still valid UTF-8
    assert text.startswith("ValueError: éé") and "Traceback" in text
