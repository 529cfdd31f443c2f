"""The shell examples of README.md, read out of the README itself, so tests run what users read.

A fenced ```bash block is one `Block`; its commands are its logical lines (backslash
continuations joined, comments kept, since bash ignores them). Inline `code` spans that start
like a command are collected too, so no example escapes the tests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

# Inline spans that read as commands a user would type.
COMMAND_START = re.compile(r"^(\.venv/bin/|python |scripts/|kubectl |docker |neuron-atlas |curl )")


@dataclass(frozen=True)
class Block:
    heading: str  # the nearest `## ` heading above it
    line: int  # 1-based line of the opening fence
    commands: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.heading}: {self.commands[0][:60]}"

    def script(self, skip: tuple[str, ...] = (), substitutions: dict[str, str] | None = None) -> str:
        """The block as one bash script, without the commands that start with an entry of
        `skip`, each `substitutions` key replaced by its value."""
        kept = [c for c in self.commands if not command_matches(c, skip)]
        text = "\n".join(kept)
        for old, new in (substitutions or {}).items():
            if old not in text:
                raise AssertionError(f"README example at line {self.line} no longer holds {old!r}")
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


def bash_blocks(text: str | None = None) -> list[Block]:
    lines = (text if text is not None else README.read_text()).splitlines()
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
            blocks.append(Block(heading, start + 1, _logical_lines(body)))
        index += 1
    return blocks


def inline_commands(text: str | None = None) -> list[str]:
    """Inline code spans outside fenced blocks that start like a shell command."""
    prose = re.sub(r"```.*?```", "", text if text is not None else README.read_text(), flags=re.S)
    spans = re.findall(r"`([^`\n]+)`", prose)
    return sorted({span for span in spans if COMMAND_START.match(span)})
