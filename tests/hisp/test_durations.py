from datetime import timedelta

import pytest

from hisp.durations import describe, parse_duration


@pytest.mark.parametrize(
    ("duration", "words"),
    [
        (timedelta(days=3), "3 days"),
        (timedelta(days=1, hours=12), "1 day 12 hours"),
        (timedelta(seconds=90), "1 minute 30 seconds"),
        (timedelta(hours=2, seconds=5), "2 hours"),
        (timedelta(weeks=1, days=2, hours=3), "1 week 2 days"),
        (timedelta(0), "0 seconds"),
        (timedelta(seconds=-5), "0 seconds"),
    ],
)
def test_durations_are_described_in_words(duration, words):
    assert describe(duration) == words


@pytest.mark.parametrize("text", ["3d", "1h30m", "15m", "2w", "45s"])
def test_a_described_duration_reads_back_the_same(text):
    duration = parse_duration(text)
    units = {"week": "w", "day": "d", "hour": "h", "minute": "m", "second": "s"}
    words = describe(duration).split()
    back = "".join(n + units[u.rstrip("s")] for n, u in zip(words[::2], words[1::2], strict=True))
    assert parse_duration(back) == duration
