"""Write the sync client (`sync.py`) from the async one (`aio.py`) with unasync, so the two
cannot drift: `await` and `async` go, `AsyncClient` becomes `Client`, httpx's async calls become
their sync twins, and `asyncio.sleep` becomes `time.sleep`.

    python client/generate_sync.py            # rewrite src/neuron_atlas_client/sync.py
    python client/generate_sync.py --check    # exit 1 when sync.py is not what aio.py gives

Needs unasync and ruff (the main distribution's `test` extra); the client itself needs neither.
"""

from __future__ import annotations

import difflib
import subprocess
import sys
import tempfile
from pathlib import Path

import unasync

PACKAGE = Path(__file__).resolve().parent / "src" / "neuron_atlas_client"
SOURCE, TARGET = PACKAGE / "aio.py", PACKAGE / "sync.py"
REPLACEMENTS = {
    "AsyncClient": "Client",  # ours and httpx's (unasync's own rule would make it SyncClient)
    "AsyncBaseTransport": "BaseTransport",
    "aclose": "close",
    "aread": "read",
    "aiter_bytes": "iter_bytes",
    "asyncio": "time",  # `from asyncio import sleep`
}
DOCSTRING = '''"""The synchronous client: `Client(url, api_key)`, or NEURON_ATLAS_URL / NEURON_ATLAS_API_KEY.

Generated from `aio.py` by `python client/generate_sync.py` (unasync): edit that file, not this
one. A test fails when this one is stale."""'''


def generated() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "_async", "aio.py")
        source.parent.mkdir()
        source.write_text(SOURCE.read_text())
        unasync.unasync_files([str(source)], [unasync.Rule("/_async/", "/_sync/", REPLACEMENTS)])
        text = Path(tmp, "_sync", "aio.py").read_text()
    _, _, body = text.partition('"""')
    _, _, body = body.partition('"""')  # the async module's docstring, replaced
    # `from time import sleep` sorts elsewhere than `from asyncio import sleep`; lines shrink.
    sorted_imports = _ruff("check", "--select", "I", "--fix", "--quiet", text=DOCSTRING + body)
    return _ruff("format", text=sorted_imports)


def _ruff(*args: str, text: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parents[2],  # the repository's ruff settings
    )
    return done.stdout


def main(argv: list[str]) -> int:
    text = generated()
    if "--check" in argv:
        current = TARGET.read_text()
        if current == text:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(), text.splitlines(), "sync.py", "generated", lineterm=""
        )
        print("\n".join(diff), file=sys.stderr)
        print("sync.py is stale: run python client/generate_sync.py", file=sys.stderr)
        return 1
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
