"""Read a YAML file safely into plain values, keeping the line and column of every key.

Only YAML's safe tags are constructed (a `!!python/object` is an error, not
code); duplicate keys, huge and binary files are errors with a position.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import Diagnostic, ManifestError

MAX_BYTES = 8 << 20  # a manifest is text written by a person; 8 MiB holds ~50k nodes
MAX_NODES = 2_000_000  # guards against alias bombs ("billion laughs")

try:  # libyaml is ~10x faster; a 5,000-node manifest must check in well under a second
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

Path_ = tuple  # a path into the document: ("sources", 0, "timeout")


@dataclass
class Document:
    """A parsed YAML file: its value, and where each path in it was written (1-based)."""

    file: str
    data: Any
    marks: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[tuple, tuple[int, int]] = field(default_factory=dict)

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


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def load_text(text: str, file: str) -> Document:
    """Parse `text`; raise ManifestError (one diagnostic) on any YAML problem."""
    loader = _Loader(text)
    doc = Document(file, None)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ManifestError([Diagnostic(file, 1, 1, "file is empty")])
        counter = [0]
        doc.data = _convert(loader, node, (), doc, counter)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if "could not determine a constructor" in str(exc.problem or ""):
            problem = f"unsupported YAML tag {exc.problem.split('tag')[-1].strip()} (only plain YAML is allowed)"
        raise ManifestError([Diagnostic(file, line, col, f"YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Diagnostic(file, 1, 1, f"YAML: {exc}")]) from None
    finally:
        loader.dispose()
    return doc


def load_file(path: str | os.PathLike) -> Document:
    """Read and parse a manifest file; every failure is a one-line ManifestError."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except IsADirectoryError:
        raise ManifestError([Diagnostic(name, 1, 1, "is a directory, not a manifest file")]) from None
    except OSError as exc:
        raise ManifestError([Diagnostic(name, 1, 1, f"cannot read: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_BYTES:
        raise ManifestError([Diagnostic(name, 1, 1, f"file is too large (over {MAX_BYTES >> 20} MiB)")])
    if b"\x00" in raw:
        raise ManifestError([Diagnostic(name, 1, 1, "not a text file (contains NUL bytes)")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ManifestError([Diagnostic(name, line, 1, f"not UTF-8 text (bad byte at offset {exc.start})")]) from None
    if not text.strip():
        raise ManifestError([Diagnostic(name, 1, 1, "file is empty")])
    return load_text(text, name)


def _convert(loader, node: yaml.Node, path: tuple, doc: Document, counter: list) -> Any:
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise ManifestError([Diagnostic(doc.file, *_mark(node), "document too large (alias expansion?)")])
    doc.marks.setdefault(path, _mark(node))
    if isinstance(node, yaml.MappingNode):
        if node.tag not in ("tag:yaml.org,2002:map",):
            _bad_tag(doc, node)
        loader.flatten_mapping(node)  # merge keys (<<)
        out: dict = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise ManifestError([Diagnostic(doc.file, *_mark(key_node), "mapping keys must be plain scalars")])
            if key in out:
                raise ManifestError([Diagnostic(doc.file, *_mark(key_node), f"duplicate key {key!r}")])
            doc.key_marks[path + (key,)] = _mark(key_node)
            out[key] = _convert(loader, value_node, path + (key,), doc, counter)
        return out
    if isinstance(node, yaml.SequenceNode):
        if node.tag not in ("tag:yaml.org,2002:seq",):
            _bad_tag(doc, node)
        return [_convert(loader, item, path + (i,), doc, counter) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _bad_tag(doc: Document, node: yaml.Node) -> None:
    raise ManifestError([Diagnostic(doc.file, *_mark(node), f"unsupported YAML tag {node.tag!r} (only plain YAML is allowed)")])
