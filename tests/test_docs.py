"""The docs site builds with `mkdocs build --strict` (a broken link or anchor fails), `scripts/docs`
serves it, and the README stays a front door into it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.readme_examples import DOCS, README, ROOT, pages
from tests.servers import free_port

MKDOCS = Path(sys.prefix) / "bin" / "mkdocs"
QUIET = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's notice about its successor
README_MAX_LINES = 250


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as CI builds it."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=ROOT,
        env=QUIET,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def built_page(site: Path, page: str) -> Path:
    """Where `docs/{page}` lands in the site (mkdocs' directory URLs)."""
    stem = page.removesuffix(".md")
    return site / ("index.html" if stem == "index" else f"{stem}/index.html")


def test_every_docs_page_is_built_into_the_site(site: Path) -> None:
    for path in sorted(DOCS.rglob("*.md")):
        assert built_page(site, str(path.relative_to(DOCS))).is_file(), path
    architecture = built_page(site, "architecture.md").read_text()
    assert 'class="mermaid"' in architecture  # the stage diagram, drawn by mkdocs-material
    assert 'id="get-v1-jobs-job-id"' in built_page(site, "reference/api.md").read_text()


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[Gone](architecture.md#no-such-section)\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text((ROOT / "mkdocs.yml").read_text().split("\nnav:")[0] + "\n")
    proc = subprocess.run(
        [
            str(MKDOCS),
            "build",
            "--strict",
            "--config-file",
            str(config),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=tmp_path,
        env=QUIET,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "architecture.md" in proc.stderr, proc.stderr


def _anchors(html: str) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', html))


def test_the_readmes_links_land(site: Path) -> None:
    """The README is not part of the site, so the build does not check its links: this does."""
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert local
    for link in local:
        target, _, anchor = link.partition("#")
        assert (ROOT / target).is_file(), f"README links to {link}: no such file"
        if anchor:
            assert target.startswith("docs/") and target.endswith(".md"), link
            page = built_page(site, target.removeprefix("docs/"))
            assert anchor in _anchors(page.read_text()), f"README links to {link}: no such section"


def test_the_readme_is_a_front_door_to_every_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings == ["Two commands", "A five-minute tour", "Documentation"]
    linked = {link.partition("#")[0] for link in re.findall(r"\]\((docs/[^)\s]+)\)", text)}
    unlinked = {str(p.relative_to(ROOT)) for p in pages()[1:]} - linked
    assert not unlinked, f"docs pages the README does not link to: {sorted(unlinked)}"


def test_the_two_commands_are_what_ci_runs() -> None:
    """The README's "Two commands" block names what .ci/run runs on a fresh clone, exactly."""
    block = re.search(r"## Two commands\n.*?```bash\n(.*?)```", README.read_text(), flags=re.S)
    assert block
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["scripts/demo", "scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "scripts/demo" in ci and "exec scripts/test" in ci


# Sections of a design document that lived outside the project ("design" + " §2"); no pointer
# into it may remain, since whoever clones the project cannot follow it.
OUTSIDE_CITATION = re.compile("design" + r" §")
SKIPPED_FOLDERS = {"site", "build", "node_modules", "demo-out", "suite-data"}


def test_no_citation_points_outside_the_repository() -> None:
    found = [
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*")
        if path.suffix in {".py", ".md", ".json", ".yaml", ".yml", ".toml", ".txt"}
        and not any(part.startswith(".") or part in SKIPPED_FOLDERS for part in path.relative_to(ROOT).parts)
        and OUTSIDE_CITATION.search(path.read_text(errors="replace"))
    ]
    assert not found, f"these cite a design document outside the repository: {found}"


def test_scripts_docs_serves_the_site(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "docs.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(ROOT / "scripts" / "docs")],
            env={**os.environ, "VENV": sys.prefix, "DOCS_ADDR": f"127.0.0.1:{port}"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # mkdocs and anything it starts, stopped together below
        )
    try:
        deadline, body = time.monotonic() + 120, ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/architecture/", timeout=5) as answer:
                    body = answer.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert "The pipeline at a glance" in body, log.read_text()
        assert "installing" not in log.read_text()  # the venv has the docs extra: nothing to install
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
