"""Text that leaves the server: error echoes, stored failure reasons, log lines.

Every string here may come from a hostile client (a 100 KB name, a control sequence in a
file name) or name the server's own layout (an upload's temporary path). Three small,
pure functions make such text safe to store and to send, and one makes any value JSON
serialisable (``json.dumps(allow_nan=False)`` refuses NaN and Infinity, which is how a
422 for ``steps: Infinity`` used to become a 500):

* :func:`strip_control` drops ANSI escape sequences (CSI ``ESC[31m``, OSC ``ESC]…BEL``)
  and C0/C1 control characters other than newline and tab;
* :func:`truncate` keeps the first ``limit`` characters and says how many there were;
* :func:`scrub_paths` replaces server directories (data dir, temp dir) by a placeholder
  and keeps only the file's own name;
* :func:`json_safe` turns any echo (pydantic's ``input``/``ctx``) into finite, bounded JSON.
"""
from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import Any

#: an echoed input is cut to this many characters (the reason a 422 gives is never cut)
ECHO_LIMIT = 200
#: stored failure reasons (``jobs.error``) are cut to this many characters
REASON_LIMIT = 4000

_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"            # CSI: ESC [ params intermediates final
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: ESC ] ... BEL | ST
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"      # DCS / SOS / PM / APC ... ST
    r"|\x1b[@-Z\\-_]"                      # two-character escapes
    r"|\x9b[0-?]*[ -/]*[@-~]"              # 8-bit CSI
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strip_control(text: str) -> str:
    """``text`` without ANSI escape sequences and control characters (newline and tab kept)."""
    return _CONTROL.sub("", _ANSI.sub("", text))


def truncate(text: str, limit: int = ECHO_LIMIT) -> str:
    """The first ``limit`` characters of ``text``, marked as cut with the full length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def server_dirs() -> tuple[list[str], list[str]]:
    """(directories whose paths a client must not see, allowed roots it may see).

    Hidden: DATA_DIR (uploads, work dirs, caches live under it), the cache dir and the
    system temp dir. Paths under an allowed root (``FVAUDIT_ALLOWED_ROOTS``, which
    includes DATA_DIR/images) are the client's own image folders and stay readable.
    """
    hidden = {tempfile.gettempdir()}
    shown: set[str] = set()
    try:
        from fvaudit.config import get_settings

        s = get_settings()
        hidden.update({str(s.data_dir), str(s.engine_cache_dir)})
        shown.update(str(r) for r in s.roots)
    except Exception:  # settings that do not parse must not break an error response
        pass
    hidden.update(str(Path(d).resolve()) for d in list(hidden))
    return (sorted((d.rstrip("/") for d in hidden if d and d != "/"), key=len, reverse=True),
            sorted(shown, key=len, reverse=True))


_PATH_TAIL = r"(?:/[^\s'\"/:,;()\[\]]*)*"


def scrub_paths(text: str, dirs: tuple[list[str], list[str]] | None = None) -> str:
    """Replace ``<server dir>/a/b/name`` by ``name``: the client learns the file, not the layout."""
    hidden, shown = dirs if dirs is not None else server_dirs()

    def repl(m: re.Match) -> str:
        path = m.group(0)
        if any(path == r or path.startswith(r + "/") for r in shown):
            return path
        tail = path.rstrip("/").rsplit("/", 1)[-1]
        return tail if len(path) > len(m.group(1)) and tail else "<server dir>"

    for d in hidden:
        if d in text:
            text = re.sub("(" + re.escape(d) + r")(?=$|[/\s'\":,;()\[\]])" + _PATH_TAIL, repl, text)
    return text


def clean_message(text: str, limit: int | None = None) -> str:
    """A message fit to send or store: no control sequences, no server paths, bounded."""
    text = scrub_paths(strip_control(str(text)))
    return truncate(text, limit) if limit else text


def clean_reason(text: str | None) -> str | None:
    """A stored failure reason (``jobs.error``): no escapes, no server paths, at most REASON_LIMIT."""
    if text is None:
        return None
    return clean_message(text, REASON_LIMIT)


def json_safe(value: Any, limit: int = ECHO_LIMIT, depth: int = 4) -> Any:
    """Any echoed value as bounded, finite JSON: long strings cut, NaN/±Infinity as
    strings, containers cut to ``limit`` items and ``depth`` levels, other objects as str."""
    if value is None or isinstance(value, bool) or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)   # 'inf', '-inf', 'nan'
    if isinstance(value, str):
        return truncate(strip_control(value), limit)
    if isinstance(value, (bytes, bytearray)):
        return truncate(bytes(value[: limit + 1]).decode("utf-8", "replace"), limit)
    if depth <= 0:
        return truncate(strip_control(repr(value)), limit)
    if isinstance(value, dict):
        items = list(value.items())
        out = {truncate(str(k), 80): json_safe(v, limit, depth - 1) for k, v in items[:limit]}
        if len(items) > limit:
            out["…"] = f"{len(items) - limit} more items"
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        out = [json_safe(v, limit, depth - 1) for v in items[:limit]]
        if len(items) > limit:
            out.append(f"… {len(items) - limit} more items")
        return out
    return truncate(clean_message(str(value)), limit)
