"""RESULTS.md as one section per numba compile target: a run replaces its own target's section
and keeps the others', so runs for several targets (native, AVX2) build one file together."""

from __future__ import annotations

import os
import re
import tempfile

_MARKER = "<!-- target: {} -->"
_MARKER_RE = re.compile(r"^<!-- target: (.+?) -->$", re.MULTILINE)


def split(text: str) -> tuple[str, dict[str, str]]:
    """(the text before the first section, {target key: section body}) in file order; a file
    without markers (the one-table format) is all preamble."""
    found = list(_MARKER_RE.finditer(text))
    preamble = text[: found[0].start()] if found else text
    ends = [m.start() for m in found[1:]] + [len(text)]
    sections = {m.group(1): text[m.end() : ends[i]].strip("\n") for i, m in enumerate(found)}
    return preamble, sections


def merge(text: str, preamble: str, key: str, body: str) -> str:
    """``text`` with ``preamble`` in front and the section ``key`` set to ``body``: replaced
    in place if present, else appended; every other section is kept as it was."""
    if "\n" in key or "-->" in key:
        raise ValueError(f"bad section key {key!r}")
    _, sections = split(text)
    sections[key] = body.strip("\n")
    parts = [preamble.rstrip("\n") + "\n"]
    parts += [f"\n{_MARKER.format(k)}\n{b}\n" for k, b in sections.items()]
    return "".join(parts)


def write_section(path: str, preamble: str, key: str, body: str) -> None:
    """Merge one section into the file at ``path`` (created if missing), atomically: a
    temporary file in the same directory, then ``os.replace``, so a reader never sees half."""
    try:
        with open(path) as f:
            old = f.read()
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        old, mode = "", 0o644
    text = merge(old, preamble, key, body)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".results-", suffix=".md")
    try:
        os.fchmod(fd, mode)  # mkstemp's file is private (0600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
