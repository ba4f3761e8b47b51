"""Read a YAML file safely into plain values, keeping the line and column of every key.

Only YAML's safe tags are constructed (a `!!python/object` is an error, not
code); duplicate keys, huge and binary files are errors with a position.
"""
from __future__ import annotations

import errno

import os
import re
from typing import Any

import yaml

from .document import Document  # noqa: F401 - re-exported; defined apart so a cached plan needs no yaml
from .errors import Diagnostic, ManifestError

MAX_BYTES = 8 << 20  # a manifest is text written by a person; 8 MiB holds ~50k nodes
MAX_NODES = 2_000_000  # guards against alias bombs ("billion laughs"); text counts 1 per 64 characters
MAX_DEPTH = 64  # nesting of mappings and lists (a manifest uses 5)

try:  # libyaml is ~10x faster; a 5,000-node manifest must check in well under a second
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader


def safe_load(data: bytes | str):
    """yaml.safe_load with libyaml when there is one (user-data and metadata: a first boot parses
    them on the login's path, and the pure-Python parser is several times slower)."""
    return yaml.load(data, Loader=_Loader)  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)





def load_text(text: str, file: str) -> Document:
    """Parse `text`; raise ManifestError (one diagnostic) on any YAML problem."""
    loader = _Loader(text)
    doc = Document(file, None, dollar="$" in text)
    try:
        doc.data = _Builder(loader, doc).build()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if "could not determine a constructor" in str(exc.problem or ""):
            tag = re.search(r"'([^']*)'", exc.problem)
            problem = f"unsupported YAML tag {tag.group(0) if tag else '?'} (only plain YAML is allowed)"
        raise ManifestError([Diagnostic(file, line, col, f"YAML: {problem}", code="yaml-syntax")]) from None
    except yaml.YAMLError as exc:  # a ReaderError (bad character): no mark, a position
        pos = getattr(exc, "position", None)
        line, col = 1, 1
        if isinstance(pos, int):
            line = text.count("\n", 0, pos) + 1
            col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        first = (str(exc).strip().splitlines() or ["invalid YAML"])[0]
        raise ManifestError([Diagnostic(file, line, col, f"YAML: {first}", code="yaml-syntax")]) from None
    finally:
        loader.dispose()
    if doc.data is None and not doc.marks:
        raise ManifestError([Diagnostic(file, 1, 1, "file is empty", code="empty-file")])
    return doc


_MAP_TAGS = (None, "!", "tag:yaml.org,2002:map")
_SEQ_TAGS = (None, "!", "tag:yaml.org,2002:seq")
_MERGE = "tag:yaml.org,2002:merge"
_NO_KEY = object()
_ScalarEvent, _AliasEvent, _StreamEndEvent = yaml.ScalarEvent, yaml.AliasEvent, yaml.StreamEndEvent
_MappingStartEvent, _MappingEndEvent = yaml.MappingStartEvent, yaml.MappingEndEvent
_SequenceStartEvent, _SequenceEndEvent = yaml.SequenceStartEvent, yaml.SequenceEndEvent
_DocumentStartEvent = yaml.DocumentStartEvent


class _Frame:
    __slots__ = ("obj", "path", "key", "key_mark", "merges", "size", "anchor")

    def __init__(self, obj, path, anchor) -> None:
        self.obj, self.path, self.anchor = obj, path, anchor
        self.key, self.key_mark, self.merges, self.size = _NO_KEY, None, [], 1


class _Builder:
    """Values and marks straight from parser events (no node tree): three times faster than
    composing nodes on a 5,000-module manifest. Aliases share the anchored value; their
    expanded size still counts against MAX_NODES, so an alias bomb is refused."""

    def __init__(self, loader, doc: Document) -> None:
        self.loader, self.doc = loader, doc
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.scalars: dict[tuple, Any] = {}
        self.stack: list[_Frame] = []
        self.total = 0
        self.root: Any = None

    def build(self) -> Any:
        loader = self.loader
        get_event = loader.get_event
        stack = self.stack
        marks, key_marks = self.doc.marks, self.doc.key_marks
        # A plain scalar is resolved once per distinct text: most scalars repeat (keys,
        # `per-boot`, module names), and resolving a tag costs a regular expression each time.
        # Untagged ones are keyed by their text alone, the "!" tag by (implicit, text): a str
        # key and a tuple key never meet.
        plain: dict[Any, Any] = {}
        docs = 0
        while True:
            ev = get_event()
            t = type(ev)
            if t is _ScalarEvent:
                tag = ev.tag
                if tag is None and not ev.implicit[0]:
                    value = ev.value  # quoted, untagged: a string whatever its text
                elif tag is None or tag == "!":
                    cache_key = ev.value if tag is None else (ev.implicit, ev.value)
                    value = plain.get(cache_key, _NO_KEY)
                    if value is _NO_KEY:
                        value = self._scalar(ev)
                        if isinstance(value, (str, int, float, bool)) or value is None or value is _MERGE_KEY:
                            plain[cache_key] = value
                else:
                    value = self._scalar(ev)
                # Text weighs by its length, so aliases of one long string cannot add up to gigabytes.
                weight = 1 + (len(value) >> 6 if type(value) is str else 0)
                if ev.anchor is not None or not stack or value is _MERGE_KEY:
                    self._add(value, ev.start_mark, weight, ev.anchor)
                    continue
                # The common case of _add, inlined: an unanchored scalar in a list or a mapping.
                frame = stack[-1]
                obj = frame.obj
                if type(obj) is dict and frame.key is _NO_KEY and (
                        value in obj or not (isinstance(value, (str, int, float, bool)) or value is None)):
                    self._add(value, ev.start_mark, weight, None)  # a bad or duplicate key: raises
                self.total += weight
                if self.total > MAX_NODES:
                    self.total -= weight
                    self._add(value, ev.start_mark, weight, None)  # raises
                frame.size += weight
                if type(obj) is list:
                    path = frame.path + (len(obj),)
                    if path not in marks:
                        mark = ev.start_mark
                        marks[path] = (mark.line + 1, mark.column + 1)
                    obj.append(value)
                elif frame.key is _NO_KEY:  # this value is a key
                    frame.key, frame.key_mark = value, ev.start_mark
                else:
                    key, frame.key = frame.key, _NO_KEY
                    path = frame.path + (key,)
                    key_mark = frame.key_mark
                    key_marks[path] = (key_mark.line + 1, key_mark.column + 1)
                    if path not in marks:
                        mark = ev.start_mark
                        marks[path] = (mark.line + 1, mark.column + 1)
                    obj[key] = value
            elif t is _MappingStartEvent or t is _SequenceStartEvent:
                if ev.tag not in (_MAP_TAGS if t is _MappingStartEvent else _SEQ_TAGS):
                    self._bad_tag(ev)
                obj = {} if t is _MappingStartEvent else []
                if not stack or len(stack) >= MAX_DEPTH:
                    self._open(obj, ev)
                    continue
                # The common case of _open, inlined: a list or a mapping's value.
                frame = stack[-1]
                parent = frame.obj
                if type(parent) is list:
                    path = frame.path + (len(parent),)
                elif frame.key is _NO_KEY:
                    self._open(obj, ev)  # a mapping as a key: raises
                    continue
                else:
                    path = frame.path + (frame.key,)
                if path not in marks:
                    mark = ev.start_mark
                    marks[path] = (mark.line + 1, mark.column + 1)
                stack.append(_Frame(obj, path, ev.anchor))
            elif t is _MappingEndEvent or t is _SequenceEndEvent:
                frame = stack.pop()
                if frame.merges:
                    for merged in frame.merges:  # explicit keys win over merged ones
                        for k, v in merged.items():
                            frame.obj.setdefault(k, v)
                if frame.anchor is not None or not stack or self.total + frame.size > MAX_NODES:
                    self._add(frame.obj, None, frame.size, frame.anchor, placed=True)
                    continue
                # The common case of _add, inlined: a finished list or mapping put in its parent.
                size = frame.size
                parent = stack[-1]
                obj = parent.obj
                if type(obj) is list:
                    self.total += size
                    parent.size += size
                    obj.append(frame.obj)
                elif parent.key is _NO_KEY or parent.key is _MERGE_KEY:
                    self._add(frame.obj, None, size, None, placed=True)  # a key (raises) or a merge
                else:
                    self.total += size
                    parent.size += size
                    key, parent.key = parent.key, _NO_KEY
                    key_mark = parent.key_mark
                    key_marks[frame.path] = (key_mark.line + 1, key_mark.column + 1)
                    obj[key] = frame.obj
            elif t is _AliasEvent:
                if ev.anchor not in self.anchors:
                    raise ManifestError([Diagnostic(self.doc.file, *_mark1(ev.start_mark), f"YAML: unknown alias {ev.anchor!r}", code="yaml-syntax")])
                value, size = self.anchors[ev.anchor]
                self._add(value, ev.start_mark, size, None)
            elif t is _DocumentStartEvent:
                docs += 1
                if docs > 1:
                    raise ManifestError([Diagnostic(self.doc.file, *_mark1(ev.start_mark), "YAML: expected a single document, found another", code="yaml-syntax")])
            elif ev is None or t is _StreamEndEvent:
                return self.root

    def _scalar(self, ev) -> Any:
        tag = ev.tag
        if tag is None or tag == "!":
            key = (ev.implicit, ev.value)
            tag = self.scalars.get(key)
            if tag is None:
                tag = self.loader.resolve(yaml.ScalarNode, ev.value, ev.implicit)
                self.scalars[key] = tag
        if tag == _MERGE:
            return _MERGE_KEY
        cache_key = (tag, ev.value)
        if cache_key in self.scalars:
            return self.scalars[cache_key]
        node = yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, ev.style)
        value = self.loader.construct_object(node, deep=True)
        if isinstance(value, (str, int, float, bool)) or value is None:
            self.scalars[cache_key] = value
        return value

    def _child_path(self) -> tuple:
        if not self.stack:
            return ()
        frame = self.stack[-1]
        if isinstance(frame.obj, dict):
            return frame.path + (frame.key,)
        return frame.path + (len(frame.obj),)

    def _open(self, obj, ev) -> None:
        if self.stack and isinstance(self.stack[-1].obj, dict) and self.stack[-1].key is _NO_KEY:
            raise ManifestError([Diagnostic(self.doc.file, *_mark1(ev.start_mark), "mapping keys must be plain scalars", code="yaml-syntax")])
        if len(self.stack) >= MAX_DEPTH:
            raise ManifestError([Diagnostic(self.doc.file, *_mark1(ev.start_mark),
                                            f"YAML: nested deeper than {MAX_DEPTH} levels", code="too-large")])
        path = self._child_path()
        self.doc.marks.setdefault(path, _mark1(ev.start_mark))
        self.stack.append(_Frame(obj, path, ev.anchor))

    def _add(self, value, mark, size: int, anchor, placed: bool = False) -> None:
        self.total += size
        if self.total > MAX_NODES:
            raise ManifestError([Diagnostic(self.doc.file, *(_mark1(mark) if mark else (1, 1)),
                                            f"document too large: over {MAX_NODES} nodes once aliases are expanded",
                                            code="too-large")])
        if anchor:
            self.anchors[anchor] = (value, size)
        if not self.stack:
            self.root = value
            if mark is not None:
                self.doc.marks.setdefault((), _mark1(mark))
            return
        frame = self.stack[-1]
        frame.size += size
        if isinstance(frame.obj, list):
            if mark is not None:
                self.doc.marks.setdefault(frame.path + (len(frame.obj),), _mark1(mark))
            frame.obj.append(value)
            return
        if frame.key is _NO_KEY:  # this value is a key
            if placed or not (isinstance(value, (str, int, float, bool)) or value is None or value is _MERGE_KEY):
                raise ManifestError([Diagnostic(self.doc.file, *(_mark1(mark) if mark else (1, 1)),
                                                "mapping keys must be plain scalars", code="yaml-syntax")])
            if value is not _MERGE_KEY and value in frame.obj:
                raise ManifestError([Diagnostic(self.doc.file, *_mark1(mark), f"duplicate key {value!r}", code="duplicate-key")])
            frame.key, frame.key_mark = value, mark
            return
        key, frame.key = frame.key, _NO_KEY
        if key is _MERGE_KEY:
            merged = value if isinstance(value, list) else [value]
            if not all(isinstance(m, dict) for m in merged):
                raise ManifestError([Diagnostic(self.doc.file, *_mark1(frame.key_mark), "YAML: << must merge a mapping or a list of mappings", code="yaml-syntax")])
            frame.merges.extend(merged)
            return
        path = frame.path + (key,)
        self.doc.key_marks[path] = _mark1(frame.key_mark)
        if mark is not None:
            self.doc.marks.setdefault(path, _mark1(mark))
        frame.obj[key] = value

    def _bad_tag(self, ev) -> None:
        raise ManifestError([Diagnostic(self.doc.file, *_mark1(ev.start_mark),
                                        f"unsupported YAML tag {ev.tag!r} (only plain YAML is allowed)", code="yaml-tag")])


class _MergeKey:
    def __repr__(self) -> str:
        return "<<"


_MERGE_KEY = _MergeKey()


def _mark1(mark) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


_cache: dict[tuple, Document] = {}


def load_file(path: str | os.PathLike) -> Document:
    """Read and parse a manifest file; every failure is a one-line ManifestError.

    The same unchanged file is parsed once per process (`check` looks at a file's kind,
    then loads it): callers get their own Document, sharing the parsed values, which
    nobody changes in place (expand_env builds new ones)."""
    name = os.fspath(path)
    try:
        st = os.stat(name)
        key = (os.path.abspath(name), st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        key = None
    if key is not None and key in _cache:
        doc = _cache[key]
        return Document(doc.file, doc.data, doc.marks, doc.key_marks, doc.dollar)
    doc = _load_file(name)
    if key is not None:
        while len(_cache) >= 4:  # a process reads two manifests; keep a few
            del _cache[next(iter(_cache))]
        _cache[key] = doc
        return Document(doc.file, doc.data, doc.marks, doc.key_marks, doc.dollar)
    return doc


def _load_file(name: str) -> Document:
    from .state import read_bytes  # non-blocking: a FIFO given as a manifest does not hang check or run

    try:
        raw = read_bytes(name, MAX_BYTES)
    except IsADirectoryError:
        raise ManifestError([Diagnostic(name, 1, 1, "is a directory, not a manifest file", code="unreadable")]) from None
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise ManifestError([Diagnostic(name, 1, 1, f"file is too large (over {MAX_BYTES >> 20} MiB)", code="too-large")]) from None
        raise ManifestError([Diagnostic(name, 1, 1, f"cannot read: {exc.strerror or exc}", code="unreadable")]) from None
    if len(raw) > MAX_BYTES:
        raise ManifestError([Diagnostic(name, 1, 1, f"file is too large (over {MAX_BYTES >> 20} MiB)", code="too-large")])
    if b"\x00" in raw:
        raise ManifestError([Diagnostic(name, 1, 1, "not a text file (contains NUL bytes)", code="not-text")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ManifestError([Diagnostic(name, line, 1, f"not UTF-8 text (bad byte at offset {exc.start})", code="not-text")]) from None
    if not text.strip():
        raise ManifestError([Diagnostic(name, 1, 1, "file is empty", code="empty-file")])
    return load_text(text, name)
