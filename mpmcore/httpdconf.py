"""A whole httpd.conf, read the way an Apache user pastes it (Debian's apache2.conf and friends).

``read_httpd_conf(text, mpm)`` keeps what mpmcore runs and says what it does with everything else:

- **applied**: the MPM and core directives mpmcore implements (``mpmcore.directives.DIRECTIVES``),
  at top level, in the running MPM's ``<IfModule mpm_X_module>`` block (or ``!``-negated blocks of
  other MPMs), and in other modules' ``<IfModule>`` blocks (read as top level: mod_reqtimeout's);
- **other MPMs' blocks**: each ``<IfModule mpm_prefork_module>`` (etc.) not for the running MPM,
  with its line and how many directives it held;
- **ignored**, each with its line and why: directives mpmcore does not run (``DefaultRuntimeDir``,
  ``LogFormat``, ``User``, ``Include``...), anything inside ``<Directory>``, ``<VirtualHost>``,
  ``<Location>``, ``<Files>`` (per-context settings), directives of another MPM at top level;
- **errors**, all of them, once each, with their line: a known directive without a value or with
  a value it does not take, a name one letter off a known one (a typo is never dropped silently),
  sections that do not close or close the wrong one.

Apache's own rules followed: a trailing backslash continues a line; a ``#`` starts a comment only
at the start of a line (Apache has no trailing comments; mpmcore also cuts `` # ...`` after a known
directive's value, as the dashboard's form always did); directive names are case-insensitive.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from mpmcore.directives import ALIASES, DIRECTIVES, MPMS, DirectiveError, canonical

__all__ = ["ConfError", "ConfLine", "ParsedConf", "read_httpd_conf"]

#: every name mpmcore takes, lower-cased -> its canonical name (Apache 2.2's aliases included)
_NAMES = {name.lower(): name for name in DIRECTIVES} | ALIASES
_MPM_MODULE = re.compile(r"^(!?)\s*(?:mpm_)?(prefork|worker|event)(?:_module|\.c)?$", re.I)
#: Sections whose contents apply to one context (a directory, a virtual host, a URL...): mpmcore
#: runs one server-wide configuration, so everything inside is listed as ignored.
_CONTEXT_SECTIONS = frozenset({"directory", "directorymatch", "files", "filesmatch", "location", "locationmatch",
                               "virtualhost", "proxy", "proxymatch", "limit", "limitexcept", "macro",
                               "requireall", "requireany", "requirenone", "authnprovideralias",
                               "authzprovideralias", "if", "elseif", "else"})
#: Conditional sections read as true (their contents apply), as Debian's configuration expects.
_CONDITIONAL_SECTIONS = frozenset({"ifmodule", "ifversion", "iffile", "ifdirective", "ifsection"})
#: <IfDefine NAME> is true only when httpd was started with -D NAME: mpmcore has none defined.
_IFDEFINE = "ifdefine"
_INCLUDES = frozenset({"include", "includeoptional"})
#: A name this close to a known directive is taken for a typo of it (difflib's ratio: one letter
#: off in a 15-letter name is 0.93; KeepAlive vs KeepAliveTimeout is 0.72).
_TYPO_RATIO = 0.88


@dataclass(frozen=True, slots=True)
class ConfLine:
    """A line that was not applied: where, what, why."""

    line: int
    directive: str
    reason: str


@dataclass(frozen=True, slots=True)
class ConfError:
    line: int | None
    directive: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.directive + ': ' if self.directive else ''}{self.message}"


@dataclass(frozen=True, slots=True)
class ParsedConf:
    mpm: str
    settings: dict[str, str] = field(default_factory=dict)  # canonical name -> value as written
    lines: dict[str, int] = field(default_factory=dict)  # canonical name -> the line that set it (last wins)
    other_mpm_blocks: tuple[ConfLine, ...] = ()  # directive = "<IfModule mpm_prefork_module>"
    ignored: tuple[ConfLine, ...] = ()
    errors: tuple[ConfError, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(slots=True)
class _Section:
    name: str  # lower-case section name
    line: int
    text: str  # as written, for messages: "<VirtualHost *:80>"
    applies: bool  # its contents apply to the running MPM
    context: str | None  # a per-context section (itself or an enclosing one): its text
    other_mpm: str | None = None  # an MPM block not for the running MPM: that MPM
    held: int = 0  # directives inside an other-MPM block


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each logical line, backslash continuations joined."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        if not buf:
            start = n
        if raw.endswith("\\"):
            buf.append(raw[:-1])
            continue
        buf.append(raw)
        out.append((start, " ".join(s.strip() for s in buf).strip()))
        buf = []
    if buf:
        out.append((start, " ".join(s.strip() for s in buf).strip()))
    return out


def _known(name: str) -> str | None:
    try:
        return canonical(name)
    except DirectiveError:
        return None


def _typo_of(name: str) -> str | None:
    close = difflib.get_close_matches(name.lower(), list(_NAMES), n=1, cutoff=_TYPO_RATIO)
    return _NAMES[close[0]] if close else None


def read_httpd_conf(text: str, mpm: str) -> ParsedConf:
    """Read a whole httpd.conf (or an excerpt) for ``mpm``: see the module docstring."""
    if mpm not in MPMS:
        raise ValueError(f"MPM must be one of {', '.join(MPMS)}, not {mpm!r}")
    settings: dict[str, str] = {}
    where: dict[str, int] = {}
    ignored: list[ConfLine] = []
    others: list[ConfLine] = []
    errors: list[ConfError] = []
    stack: list[_Section] = []
    if not text.strip():
        return ParsedConf(mpm, errors=(ConfError(None, None, "the text is empty: paste an httpd.conf or a part of one"),))
    for lineno, line in _logical_lines(text):
        if not line or line.startswith("#"):
            continue
        if line.startswith("</"):
            name = line[2:].rstrip(">").strip().lower()
            if not stack:
                errors.append(ConfError(lineno, None, f"{line} without an opening section"))
                continue
            top = stack[-1]
            if name != top.name:
                errors.append(ConfError(lineno, None, f"{line} closes {top.text} of line {top.line}"))
                continue
            stack.pop()
            if top.other_mpm is not None:
                who = top.other_mpm if top.other_mpm.startswith("MPMs") else f"the {top.other_mpm} MPM"
                n = f"{top.held} directive{'' if top.held == 1 else 's'}"
                others.append(ConfLine(top.line, top.text, f"for {who} ({n}); {mpm} is running"))
            continue
        if line.startswith("<"):
            if not line.endswith(">"):
                errors.append(ConfError(lineno, None, f"section {line.split()[0]}: missing '>'"))
                continue
            inner = line[1:-1].strip()
            name, _, arg = inner.partition(" ")
            lname, arg = name.lower(), arg.strip().strip('"')
            parent_applies = all(s.applies for s in stack)
            parent_context = next((s.context for s in reversed(stack) if s.context), None)
            sec = _Section(lname, lineno, line, parent_applies, parent_context)
            if lname == "ifmodule":
                m = _MPM_MODULE.match(arg)
                if m:
                    negate, which = m.group(1) == "!", m.group(2).lower()
                    if (which == mpm) == negate:
                        sec.applies = False
                        sec.other_mpm = which if not negate else f"MPMs other than {which}"
            elif lname == _IFDEFINE:
                sec.applies = arg.startswith("!")
            elif lname in _CONTEXT_SECTIONS or lname not in _CONDITIONAL_SECTIONS:
                sec.context = parent_context or line
            stack.append(sec)
            continue
        name, _, value = line.partition(" ")
        value = value.strip()
        known = _known(name)
        if any(s.other_mpm is not None for s in stack):
            for s in stack:
                if s.other_mpm is not None:
                    s.held += 1
            continue
        context = next((s.context for s in reversed(stack) if s.context), None)
        if context is not None:
            ignored.append(ConfLine(lineno, name, f"inside {context}: per-context settings are not applied "
                                                  "(mpmcore runs one server-wide configuration)"))
            continue
        if not all(s.applies for s in stack):
            ignored.append(ConfLine(lineno, name, "inside a section that does not apply here"))
            continue
        if known is None:
            typo = _typo_of(name)
            if typo is not None:
                errors.append(ConfError(lineno, name, f"unknown directive; did you mean {typo}?"))
            elif name.lower() in _INCLUDES:
                ignored.append(ConfLine(lineno, name, "mpmlab reads only the pasted text: paste the included "
                                                      f"file's MPM part too ({value})"))
            else:
                ignored.append(ConfLine(lineno, name, "not an MPM or core directive mpmcore runs"))
            continue
        if " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        value = value.strip().strip('"')
        if not value:
            errors.append(ConfError(lineno, known, "missing value"))
            continue
        d = DIRECTIVES[known]
        if not d.applies_to(mpm):
            users = ", ".join(m for m in MPMS if d.applies_to(m))
            ignored.append(ConfLine(lineno, known, f"a {users} directive: not used by the {mpm} MPM"))
            continue
        try:
            d.parse(value)
        except DirectiveError as e:
            errors.append(ConfError(lineno, known, e.message))
            continue
        settings[known] = value
        where[known] = lineno
    for s in reversed(stack):
        errors.append(ConfError(s.line, None, f"{s.text} is never closed"))
    return ParsedConf(mpm, settings, where, tuple(others), tuple(ignored), tuple(errors))
