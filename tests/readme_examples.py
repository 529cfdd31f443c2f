"""The shell examples of README.md and of every docs/ page, read out of the pages themselves,
so tests run what users read.

A fenced ```bash block is one `Block`; its commands are its logical lines (backslash
continuations joined, comments kept, since bash ignores them). Inline `code` spans that start
like a command are collected too, so no example escapes the tests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

# Inline spans that read as commands a user would type.
COMMAND_START = re.compile(r"^(\.venv/bin/|python |scripts/|kubectl |docker |neuron-atlas |curl )")


def pages() -> list[Path]:
    """README.md, then every page of the docs site."""
    return [README, *sorted(DOCS.rglob("*.md"))]


@dataclass(frozen=True)
class Block:
    heading: str  # the nearest `## ` heading above it
    line: int  # 1-based line of the opening fence
    commands: tuple[str, ...]
    page: str = "README.md"  # relative to the project folder

    @property
    def name(self) -> str:
        return f"{self.page}, {self.heading}: {self.commands[0][:60]}"

    def script(self, skip: tuple[str, ...] = (), substitutions: dict[str, str] | None = None) -> str:
        """The block as one bash script, without the commands that start with an entry of
        `skip`, each `substitutions` key replaced by its value."""
        kept = [c for c in self.commands if not command_matches(c, skip)]
        text = "\n".join(kept)
        for old, new in (substitutions or {}).items():
            if old not in text:
                raise AssertionError(f"{self.page} example at line {self.line} no longer holds {old!r}")
            text = text.replace(old, new)
        return text + "\n"


def command_matches(command: str, starts: tuple[str, ...]) -> bool:
    return any(command.lstrip().startswith(start) for start in starts)


def _logical_lines(lines: list[str]) -> tuple[str, ...]:
    commands: list[str] = []
    current = ""
    for line in lines:
        current += line.rstrip() + "\n"
        if not line.rstrip().endswith("\\"):
            if current.strip():
                commands.append(current.rstrip("\n"))
            current = ""
    if current.strip():
        commands.append(current.rstrip("\n"))
    return tuple(commands)


def blocks_of(text: str, page: str = "README.md") -> list[Block]:
    lines = text.splitlines()
    blocks, heading, index = [], "", 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            heading = line[3:].strip()
        if line.strip() == "```bash":
            start = index
            index += 1
            body = []
            while lines[index].strip() != "```":
                body.append(lines[index])
                index += 1
            blocks.append(Block(heading, start + 1, _logical_lines(body), page))
        index += 1
    return blocks


def bash_blocks(page: Path | None = None) -> list[Block]:
    """The ```bash blocks of one page, or of every page (README.md first)."""
    return [
        block
        for path in ([page] if page else pages())
        for block in blocks_of(path.read_text(), str(path.relative_to(ROOT)))
    ]


def spans_of(text: str) -> set[str]:
    """Inline code spans outside fenced blocks that start like a shell command."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return {span for span in re.findall(r"`([^`\n]+)`", prose) if COMMAND_START.match(span)}


def inline_commands() -> list[str]:
    """The command spans of every page."""
    return sorted({span for path in pages() for span in spans_of(path.read_text())})
