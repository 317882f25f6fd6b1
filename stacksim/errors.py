"""Errors that reach a person: one clear paragraph, never a traceback.

Every error raised for bad input is a :class:`StackSimError`. The CLI prints ``str(err)`` and exits
with code 2. Scenario errors carry the file, the line and the field path so that the message
points at exactly what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class StackSimError(Exception):
    """Base class for every error caused by user input (exit code 2 at the CLI)."""


# A value quoted back in a message is cut to this many characters: enough to recognise any real
# name, id or number, while a 200,000-character value still makes a one-paragraph message.
QUOTE_CHARS = 80


def clip(value: object, limit: int = QUOTE_CHARS) -> str:
    """``str(value)`` as a message quotes it: cut in the middle when long, with its length."""
    s = str(value)
    if len(s) <= limit:
        return s
    half = limit // 2
    return f"{s[:half]}...{s[-half // 2:]} ({len(s):,} characters)"


@dataclass
class Problem:
    """One thing wrong in a scenario: where it is and what would be valid."""

    message: str
    field: str = ""
    line: int | None = None

    def render(self, file: str | None) -> str:
        where = file or "<scenario>"
        if self.line is not None:
            where += f", line {self.line}"
        if self.field:
            where += f", field '{self.field}'"
        return f"{where}: {self.message}"


@dataclass
class ScenarioError(StackSimError):
    """A scenario file (or a file it names) is invalid."""

    problems: list[Problem] = field(default_factory=list)
    file: str | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        if not self.problems:
            return f"{self.file or '<scenario>'}: invalid scenario"
        shown = self.problems[:8]
        lines = [p.render(self.file) for p in shown]
        more = len(self.problems) - len(shown)
        if more > 0:
            lines.append(f"... and {more} more problem(s) in the same file.")
        return "\n".join(lines)

