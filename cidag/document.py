"""A parsed manifest and where each of its values was written: what a diagnostic points at.

Kept apart from yamldoc.py (the parser) so that unpickling a cached compiled plan,
whose specs hold their Document, imports no YAML library on the boot path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import Diagnostic


@dataclass
class Document:
    """A parsed YAML file: its value, and where each path in it was written (1-based)."""

    file: str
    data: Any
    marks: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    dollar: bool = True  # False when the text holds no "$": no ${VAR} to expand (a walk saved)

    def where(self, path: tuple, key: bool = False) -> tuple[int, int]:
        """Line and column of `path` (its key when `key`), or of its nearest parent."""
        table = self.key_marks if key else self.marks
        p = tuple(path)
        while p:
            if p in table:
                return table[p]
            if p in self.marks:
                return self.marks[p]
            p = p[:-1]
        return self.marks.get((), (1, 1))

    def diag(self, path: tuple, message: str, *, key: bool = False, severity: str = "error",
             code: str = "") -> Diagnostic:
        line, col = self.where(path, key)
        return Diagnostic(self.file, line, col, message, severity, code)
