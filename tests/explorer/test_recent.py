"""The gateway keeps only a few explorer indexes in memory (each holds a parsed hierarchy.json,
hundreds of MB for a large job): the least recently used goes first."""

from services.gateway.explorer.recent import Recent


def test_at_most_size_values_are_kept_and_the_least_recently_used_goes_first() -> None:
    recent: Recent[str, int] = Recent(size=2)
    recent.put("a", 1)
    recent.put("b", 2)
    assert recent.get("a") == 1  # "a" is now the more recent
    recent.put("c", 3)
    assert recent.get("b") is None and recent.get("a") == 1 and recent.get("c") == 3
    recent.put("a", 4)  # a new value for a kept key replaces it, nothing else goes
    assert recent.get("a") == 4 and recent.get("c") == 3
