"""The explorer's one HTML page and its assets, the same files for the gateway and the report."""

from __future__ import annotations

from importlib import resources

ASSETS = ("app.js", "style.css")
MODES = ("api", "static")


def asset(name: str) -> bytes:
    if name not in ASSETS:
        raise FileNotFoundError(name)
    return resources.files(__package__).joinpath("assets", name).read_bytes()


def index_html(mode: str) -> str:
    """index.html for `mode`: "api" (the gateway's `/ui`, data from `/ui/api`) or "static" (the
    report's folder, data from `data/*.js`, which a browser loads from disk where fetch cannot)."""
    if mode not in MODES:
        raise ValueError(mode)
    text = resources.files(__package__).joinpath("assets", "index.html").read_text(encoding="utf-8")
    return text.replace("{{mode}}", mode)
