"""Make an API key: `python -m services.gateway.keys TENANT` prints the key (give it to the
tenant) and the `GATEWAY_API_KEYS` entry (its sha256, for the gateway's settings).

Standard library only, so it runs with the base install (no `suite` extra, no FastAPI): the key
can be made on any machine. `deps.hash_key` hashes the same way (tests check they agree)."""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys


def hash_key(key: str) -> str:
    """The sha256 the gateway stores for a key (services.gateway.deps.hash_key)."""
    return hashlib.sha256(key.encode()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tenant")
    args = parser.parse_args(argv)
    key = "na_" + secrets.token_urlsafe(32)
    sys.stdout.write(f"API key (shown once): {key}\n")
    sys.stdout.write(f"GATEWAY_API_KEYS entry: {json.dumps({hash_key(key): args.tenant})}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
