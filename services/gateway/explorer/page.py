"""The explorer's one HTML page and its assets, the same files for the gateway and the report."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from xml.sax.saxutils import escape

ASSETS = ("app.js", "style.css")
MODES = ("api", "static")
VIEWS = ("result", "comparison")


def asset(name: str) -> bytes:
    if name not in ASSETS:
        raise FileNotFoundError(name)
    return resources.files(__package__).joinpath("assets", name).read_bytes()


PLOT_TITLES = {"summary": "The result at a glance", "pruning": "The pruning curve"}


def index_html(mode: str, plots: Sequence[str] = (), view: str = "result") -> str:
    """index.html for `mode`: "api" (the gateway's `/ui`, data from `/ui/api`) or "static" (the
    report's folder, data from `data/*.js`, which a browser loads from disk where fetch cannot).
    `plots`: the report's `plots/{name}.svg` files, linked for a browser without JavaScript.
    `view`: what a static folder opens on, a result or a comparison (`neuron-atlas compare`)."""
    if mode not in MODES or view not in VIEWS:
        raise ValueError((mode, view))
    text = resources.files(__package__).joinpath("assets", "index.html").read_text(encoding="utf-8")
    links = "".join(
        f'<li><a href="plots/{escape(name)}.svg">{escape(PLOT_TITLES.get(name, name))}</a></li>'
        for name in plots
    )
    noscript = f"<p>Without JavaScript, the plots open on their own:</p><ul>{links}</ul>" if links else ""
    return text.replace("{{mode}}", mode).replace("{{view}}", view).replace("{{noscript}}", noscript)
