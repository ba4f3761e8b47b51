"""Errors cidag raises; the CLI turns each into one line and an exit code."""
from __future__ import annotations

from dataclasses import dataclass, field


class CidagError(Exception):
    """Base of every error the CLI reports as one line (exit 2 unless said)."""

    exit_code = 2


class UsageError(CidagError):
    """Bad command-line use: a missing file, an unknown module name in --only."""


@dataclass(frozen=True)
class Diagnostic:
    """One finding about a manifest: where it is, how bad, what it says."""

    file: str
    line: int
    col: int
    message: str
    severity: str = "error"  # "error" | "warning"
    code: str = ""

    def format(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}: {prefix}{self.message}"


@dataclass
class ManifestError(CidagError):
    """One or more errors in a manifest; each diagnostic formats as one line."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return "\n".join(d.format() for d in self.diagnostics)


class SettingsError(ValueError):
    """Settings of a type do not match its schema; `path` is inside settings."""

    def __init__(self, message: str, path: tuple = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class SourceUnavailable(Exception):
    """Raised by a source probe: not this platform (same as returning None)."""


class DeadlineReached(Exception):
    """Raised by a node that stopped because its deadline passed (its command killed at
    the timeout): the node timed out, with nothing more to say than the timeout."""


class CapabilityUnavailable(KeyError):
    """A capability was read that is unavailable or not declared by the reader."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want prose
        return str(self.args[0]) if self.args else "capability unavailable"
