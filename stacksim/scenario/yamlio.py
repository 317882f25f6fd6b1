"""YAML with line numbers, read safely from files a person gives.

PyYAML's composer gives every node a start mark; we build plain Python data from the node tree and
keep a map from field path (a tuple of keys and indices) to the 1-based line where it is written.
Only the safe YAML subset is accepted (no Python tags), as ``yaml.safe_load`` would.

Input is hostile until checked: :func:`read_text_file` reads regular files only, at most
``MAX_FILE_BYTES``; :func:`load_yaml_with_lines` walks the parser's events once before building
anything, refusing nesting deeper than ``MAX_DEPTH`` and more than ``MAX_NODES`` values (aliases
counted at every use, so an alias bomb is refused before it expands), and names the field path of
the line a syntax error is on.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

import yaml

from stacksim.errors import Problem, ScenarioError, clip

Path = tuple[str | int, ...]

# The largest bundled scenario is 7.5 KB (scenarios/at-scale-2027.yaml) and its traces are separate
# files: 5 MiB is ~700 times that, and a file that size is read and checked in about a second.
MAX_FILE_BYTES = 5 * 1024 * 1024
# The deepest bundled scenario nests 10 levels (agents' steps inside branches); 64 leaves room for
# any real file while keeping every recursive step that follows (the composer, the constructor
# below, pydantic) far from Python's recursion limit of 1000.
MAX_DEPTH = 64
# The largest bundled scenario holds 657 values (keys, scalars and collections); 100,000 is 150
# times that. Aliases count at every use: 9 levels of 9 aliases ("billion laughs") would expand to
# 9^9 = 387 million values and stops here after 100,000, before anything is built.
MAX_NODES = 100_000

# libyaml's parser (when PyYAML was built with it) is ~10 times faster than the pure-Python one:
# `stacksim validate` of a 4.8 MB file of 100,000 pools took 27 s, nearly all in PyYAML's scanner.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# What YAML 1.1 allows in a stream (PyYAML's Reader.NON_PRINTABLE): everything else is refused.
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010ffff]")
_MERGE_TAG = "tag:yaml.org,2002:merge"


def shown_path(name: str) -> str:
    """A file name as a message quotes it: a path too long to be a real one is cut in the middle."""
    if len(name) <= 300:  # longer than any path a person types; PATH_MAX is 4096 on Linux
        return name
    return f"{name[:120]}...{name[-120:]} (a {len(name):,}-character path)"


def is_regular_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a regular file; False, not an exception, for a path the system refuses
    (too long, a NUL character in it)."""
    try:
        return os.path.isfile(path)
    except (OSError, ValueError):
        return False


def read_text_file(path: str | os.PathLike[str], what: str = "scenario") -> str:
    """The text of a UTF-8 file a person named: a regular file of at most MAX_FILE_BYTES, read
    without blocking (a named pipe or a device is refused, not read). Errors name the file."""
    name = shown_path(str(path))
    a_what = ("an " if what[:1].lower() in "aeiou" else "a ") + what
    hint = f"give {a_what} .yaml file"
    try:
        # O_NONBLOCK: opening a named pipe would otherwise wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ScenarioError([Problem(f"{what} file not found")], file=name) from None
    except IsADirectoryError:
        raise ScenarioError([Problem(f"is a directory; {hint}")], file=name) from None
    except ValueError:  # an embedded NUL character
        raise ScenarioError([Problem(f"not a valid path (it holds a NUL character); {hint}")], file=name) from None
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno == errno.ENAMETOOLONG:
            why += " (a path is at most 4,096 bytes, each name in it at most 255)"
        raise ScenarioError([Problem(f"cannot open it: {why}; {hint}")], file=name) from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if stat.S_ISDIR(mode):
            raise ScenarioError([Problem(f"is a directory; {hint}")], file=name)
        if not stat.S_ISREG(mode):
            raise ScenarioError([Problem(f"not a regular file (a device, a named pipe or a socket); {hint}")], file=name)
        try:
            data = fh.read(MAX_FILE_BYTES + 1)  # one byte more tells a file over the cap
        except OSError as exc:
            raise ScenarioError([Problem(f"cannot read it: {exc.strerror or exc}")], file=name) from None
    if len(data) > MAX_FILE_BYTES:
        raise ScenarioError([Problem(f"larger than {MAX_FILE_BYTES // 1024 // 1024} MiB; not {a_what} file "
                                     f"(the largest bundled scenario is 8 KB)")], file=name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ScenarioError([Problem(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start:,}); "
                                     f"{a_what} file is YAML in UTF-8", line=line)], file=name) from None


# --------------------------------------------------------------------------- the event walk


@dataclass
class _Frame:
    """A mapping or sequence being parsed."""

    path: Path
    is_map: bool
    anchor: str | None
    key: Any = None  # mapping: the key whose value comes next
    want_value: bool = False
    index: int = 0  # sequence: the index of the next item
    size: int = 1  # values in it, itself included, aliases expanded
    height: int = 1  # levels in it, itself included


@dataclass
class _Walk:
    """One pass over the parser's events: the field path at each point, the nesting depth and the
    number of values with every alias expanded. Nothing is built."""

    stop_line: int | None = None  # stop at the first event past this (1-based) line
    stack: list[_Frame] = field(default_factory=list)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # anchor -> (size, height)
    total: int = 0
    last: tuple[int, Path] | None = None  # the line and path of the last value started

    def run(self, text: str) -> None:
        loader = _Loader(text)
        try:
            while True:
                ev = loader.get_event()
                if ev is None or isinstance(ev, yaml.StreamEndEvent):
                    return
                line = ev.start_mark.line + 1
                if self.stop_line is not None and line > self.stop_line:
                    return
                self.event(ev, line)
        finally:
            loader.dispose()

    def where(self) -> Path:
        """The path of the value being parsed now (the container, or its key awaiting a value)."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if top.is_map:
            return top.path + (top.key,) if top.want_value and _plain(top.key) else top.path
        return top.path + (top.index,)

    def path_of_line(self, line: int | None) -> Path:
        """The field a line belongs to: the last value started on it, else the one being parsed."""
        if line is not None and self.last is not None and self.last[0] == line:
            return self.last[1]
        top = self.stack[-1] if self.stack else None
        if line is not None and self.last is not None and self.last[0] < line and top is not None and top.is_map:
            return top.path  # a new line in a mapping (e.g. a tab-indented key), not the value above it
        return self.where()

    def _too_big(self, line: int, what: str) -> ScenarioError:
        path = self.where()
        shown = dotted(path[:12]) + ("..." if len(path) > 12 else "")  # a too-deep path is cut
        return ScenarioError([Problem(what, field=shown, line=line)])

    def event(self, ev: yaml.Event, line: int) -> None:
        if isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            done = self.stack.pop()
            if done.anchor is not None:
                self.sizes[done.anchor] = (done.size, done.height)
            self._close(done.size, done.height)
            return
        if not isinstance(ev, (yaml.ScalarEvent, yaml.AliasEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            return  # stream and document events
        top = self.stack[-1] if self.stack else None
        keyed = top if top is not None and top.is_map and not top.want_value else None  # this event is its key
        path = self.where() if keyed is None else keyed.path
        if isinstance(ev, yaml.AliasEvent):
            if any(f.anchor == ev.anchor for f in self.stack):
                raise self._too_big(line, f"the alias *{clip(ev.anchor)} refers to a node that contains it (a recursive "
                                          "structure); a scenario is a tree: write the values out")
            if ev.anchor not in self.sizes:
                raise self._too_big(line, f"the alias *{clip(ev.anchor)} names no anchor defined above it "
                                          f"(write &{clip(ev.anchor)} on the value first)")
            size, height = self.sizes[ev.anchor]
        else:
            size, height = 1, 1
        if len(self.stack) + height > MAX_DEPTH:
            raise self._too_big(line, f"nested deeper than {MAX_DEPTH} levels (aliases expanded); a scenario nests "
                                      "about 10 levels, so this is not one")
        self.total += size
        if self.total > MAX_NODES:
            raise self._too_big(line, f"more than {MAX_NODES:,} values (YAML aliases count at every use); a scenario "
                                      "holds hundreds, so this is not one (an alias bomb is refused this way)")
        self.last = (line, path + (ev.value,) if keyed is not None and isinstance(ev, yaml.ScalarEvent) else path)
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if keyed is not None:  # a complex key (the constructor names it); _close turns to its value
                keyed.key = None
            self.stack.append(_Frame(path, isinstance(ev, yaml.MappingStartEvent), ev.anchor))
            return
        if isinstance(ev, yaml.ScalarEvent) and ev.anchor is not None:
            self.sizes[ev.anchor] = (1, 1)
        if keyed is not None:
            keyed.key = ev.value if isinstance(ev, yaml.ScalarEvent) else None
            keyed.want_value = True
            keyed.size += size
            keyed.height = max(keyed.height, height + 1)
            return
        self._close(size, height)

    def _close(self, size: int, height: int) -> None:
        """A value ended: count it in its parent and move the parent on."""
        if not self.stack:
            return
        top = self.stack[-1]
        top.size += size
        top.height = max(top.height, height + 1)
        if top.is_map:
            if top.want_value:
                top.want_value = False
            else:  # a complex key ended; its value follows
                top.want_value = True
        else:
            top.index += 1


def _plain(key: Any) -> bool:
    return isinstance(key, (str, int)) and not isinstance(key, bool)


def _field_at(text: str, line: int | None) -> str:
    """The dotted field path a line of ``text`` belongs to (best effort: '' when unknown)."""
    w = _Walk(stop_line=line)
    try:
        w.run(text)
    except (yaml.YAMLError, ScenarioError):
        pass
    return dotted(w.path_of_line(line))


def _check_printable(text: str, file: str | None) -> None:
    bad = _NON_PRINTABLE.search(text)
    if bad is None:
        return
    pos = bad.start()
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    code = ord(bad.group())
    what = "a control character" if code < 0x20 or 0x7F <= code < 0xA0 else "a character YAML does not allow"
    fld = _field_at(_NON_PRINTABLE.sub(" ", text), line)
    raise ScenarioError(
        [Problem(f"{what} (U+{code:04X}) at column {column}; a YAML file holds printable text only: remove it "
                 "(or write it as an escape such as \\t inside double quotes)", field=fld, line=line)],
        file=file,
    )


# --------------------------------------------------------------------------- building the data


def _construct(node: yaml.Node, path: Path, lines: dict[Path, int], loader: Any) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            kline = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                raise ScenarioError([Problem("YAML merge keys ('<<') are not supported; write the keys out.",
                                             field=dotted(path), line=kline)])
            if not isinstance(key_node, yaml.ScalarNode):
                raise ScenarioError([Problem("a mapping key must be a plain value (a name), not a list or a mapping",
                                             field=dotted(path), line=kline)])
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict, set)):
                raise ScenarioError([Problem("a mapping key must be a plain value", field=dotted(path), line=kline)])
            if key in out:
                raise ScenarioError(
                    [Problem(f"duplicate key '{clip(key)}'", field=_dotted(path + (key,)), line=kline)]
                )
            sub = path + (key,)
            lines[sub] = kline
            out[key] = _construct(value_node, sub, lines, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, path + (i,), lines, loader) for i, v in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _syntax_problem(exc: yaml.YAMLError, text: str) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = "; ".join(x for x in (exc.context, exc.problem) if x) or "could not parse"
        hint = "Check indentation, colons and quotes."
        if "\t" in text and ("'\\t'" in what or "cannot start any token" in what):
            hint = "YAML indents with spaces, never tabs."
        return Problem(f"malformed YAML: {what}. {hint}", field=_field_at(text, line), line=line)
    return Problem(f"malformed YAML: {exc}")


def load_yaml_with_lines(text: str, file: str | None = None) -> tuple[Any, dict[Path, int]]:
    """Parse ``text`` and return ``(data, lines)`` where ``lines`` maps field paths to lines."""
    if not text.strip():
        raise ScenarioError([Problem("the file is empty; a scenario needs at least pools, deployments, workloads and horizon_s", line=1)], file=file)
    _check_printable(text, file)
    try:
        _Walk().run(text)  # sizes and depths first: nothing is built from an input that is too big
    except ScenarioError as exc:
        raise ScenarioError(exc.problems, file=file) from None
    except yaml.YAMLError as exc:
        raise ScenarioError([_syntax_problem(exc, text)], file=file) from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[Path, int] = {}
        data = _construct(node, (), lines, loader)
    except ScenarioError as exc:
        raise ScenarioError(exc.problems, file=file) from None
    except yaml.YAMLError as exc:
        raise ScenarioError([_syntax_problem(exc, text)], file=file) from None
    finally:
        loader.dispose()
    return data, lines


def flow_yaml(data: Any) -> str:
    """``data`` as one line of YAML that reads back as the same values. (JSON does not: YAML 1.1
    reads JSON's 1e-05 or 1e+16, floats without a dot, as strings.)"""
    return str(yaml.safe_dump(data, default_flow_style=True, width=2**31 - 1, sort_keys=False)).strip()


def _dotted(path: Path) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def dotted(path: Path) -> str:
    """``('deployments', 'chat', 'engine', 'block_size')`` -> ``deployments.chat.engine.block_size``."""
    return _dotted(path)


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of ``path`` or of its nearest written ancestor."""
    p = tuple(path)
    while True:
        if p in lines:
            return lines[p]
        if not p:
            return None
        p = p[:-1]
