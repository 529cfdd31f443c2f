"""The gateway keeps only a few explorer indexes in memory (each holds a parsed hierarchy.json,
hundreds of MB for a large job): the least recently used goes first."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

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


def test_misses_at_once_make_the_value_once() -> None:
    """A page asks for several answers together (48 thumbnails, a summary and its children):
    the first miss makes the index, the others wait for it instead of making it again."""
    recent: Recent[str, int] = Recent()
    made = []
    started = threading.Event()

    def make() -> int:
        made.append(1)
        started.set()
        time.sleep(0.2)  # long enough that every other thread misses meanwhile
        return 7

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(recent.get_or_make, "job", make)
        started.wait(5)
        others = [pool.submit(recent.get_or_make, "job", make) for _ in range(7)]
        assert first.result() == 7 and [o.result() for o in others] == [7] * 7
    assert len(made) == 1
    assert recent.get_or_make("other", lambda: 8) == 8 and recent.get("job") == 7
