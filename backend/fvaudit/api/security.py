"""API tokens, share tokens and signed image URLs.

* API tokens (``fva_`` + 43 url-safe chars) are stored as SHA-256 hashes only;
  ``fvaudit token create`` prints one once.
* Share tokens (43 url-safe chars, 256 bits) grant read-only access to one run.
* Image URLs handed out by the API carry an HMAC of (image set, image id, expiry, share
  link), so an ``<img src>`` works without credentials, only for images the API has
  shown, only until it expires (``FVAUDIT_IMAGE_URL_TTL``) and, for URLs handed out
  through a share link, only while that link is not revoked.
* :class:`RedactSecrets` keeps tokens out of every log line (uvicorn's access log
  prints the query string, and the SSE stream takes ``?token=``).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from fvaudit.db.tables import APIToken, ShareLink, User, utcnow

TOKEN_PREFIX = "fva_"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]{16,128}$")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def well_formed(token: str | None) -> bool:
    return bool(token) and bool(_TOKEN_RE.match(token))


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_share_token() -> str:
    return secrets.token_urlsafe(32)


def create_token(db: Session, user_name: str, admin: bool = False, label: str = "",
                 token: str | None = None) -> tuple[User, str]:
    """Create (or reuse) the user and a new API token for it; returns (user, token)."""
    user = db.scalar(select(User).where(User.name == user_name))
    if user is None:
        user = User(name=user_name, is_admin=admin)
        db.add(user)
        db.flush()
    elif admin and not user.is_admin:
        user.is_admin = True
    token = token or new_api_token()
    if not well_formed(token):
        raise ValueError("a token must be 16-128 characters of A-Z a-z 0-9 _ -")
    h = hash_token(token)
    existing = db.scalar(select(APIToken).where(APIToken.token_hash == h))
    if existing is None:
        db.add(APIToken(user_id=user.id, name=label, token_hash=h, prefix=token[:8]))
    elif existing.user_id != user.id:
        raise ValueError("that token already belongs to another user")
    else:
        existing.revoked_at = None
    db.flush()
    return user, token


@dataclass(frozen=True)
class CachedUser:
    id: int
    name: str
    is_admin: bool


class TokenCache:
    """token hash -> user, for a few seconds (a revoked token stops working within the TTL)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, CachedUser | None]] = {}

    def lookup(self, db: Session, token: str, ttl: float) -> CachedUser | None:
        if not well_formed(token):
            return None
        h = hash_token(token)
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(h)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = db.execute(select(APIToken.id, User.id, User.name, User.is_admin).join(User, APIToken.user_id == User.id)
                         .where(APIToken.token_hash == h, APIToken.revoked_at.is_(None))).one_or_none()
        user = CachedUser(row[1], row[2], row[3]) if row else None
        if row is not None:
            db.execute(update(APIToken).where(APIToken.id == row[0]).values(last_used_at=utcnow()))
            db.commit()
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[h] = (now + ttl, user)
        return user

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


TOKENS = TokenCache()


# ---------------------------------------------------------------- signed image URLs

#: a signature is valid for at least IMAGE_URL_TTL (the setting) and at most one bucket
#: more; within a bucket every page view gets the same URL, so the browser cache holds
SIG_BUCKET_SECONDS = 600


@dataclass(frozen=True)
class ImageSig:
    """What a signed image URL's ``sig`` carries: ``<expires>.<share link id or 0>.<mac>``."""

    expires: int
    share_id: int | None
    mac: str


def image_sig_expiry(ttl: int, now: float | None = None) -> int:
    """The expiry (unix seconds) of a URL signed now: ``ttl`` ahead, rounded up to a bucket."""
    now = time.time() if now is None else now
    return (int(now) // SIG_BUCKET_SECONDS + 1) * SIG_BUCKET_SECONDS + int(ttl)


def _mac(key: bytes, image_set_id: int, image_id: int, expires: int, share_id: int | None) -> str:
    msg = f"img:{image_set_id}:{image_id}:{expires}:{share_id or 0}".encode()
    return base64.urlsafe_b64encode(hmac.new(key, msg, hashlib.sha256).digest()[:16]).decode().rstrip("=")


def sign_image(key: bytes, image_set_id: int, image_id: int, expires: int, share_id: int | None = None) -> str:
    """The ``sig`` of an image URL: valid until ``expires`` and, when the URL was handed out
    through a share link, only while that link is not revoked (checked at serving)."""
    return f"{int(expires)}.{int(share_id or 0)}.{_mac(key, image_set_id, image_id, expires, share_id)}"


_SIG_RE = re.compile(r"^(\d{1,12})\.(\d{1,12})\.([A-Za-z0-9_\-]{22})$")


def parse_image_sig(key: bytes, image_set_id: int, image_id: int, sig: str | None,
                    now: float | None = None) -> ImageSig | None:
    """The signature's contents if its MAC is right and it has not expired, else None."""
    m = _SIG_RE.match(sig or "")
    if m is None:
        return None
    expires, share_id = int(m.group(1)), int(m.group(2)) or None
    want = _mac(key, image_set_id, image_id, expires, share_id)
    if not hmac.compare_digest(want.encode(), m.group(3).encode()):
        return None
    if expires < (time.time() if now is None else now):
        return None
    return ImageSig(expires, share_id, m.group(3))


def check_image_sig(key: bytes, image_set_id: int, image_id: int, sig: str | None, db: Session | None = None) -> bool:
    """A signed URL is good when its MAC fits, it has not expired and, if it was handed out
    through a share link, that link still exists unrevoked (needs ``db``)."""
    parsed = parse_image_sig(key, image_set_id, image_id, sig)
    if parsed is None:
        return False
    if parsed.share_id is None:
        return True
    if db is None:
        return False
    return db.scalar(select(ShareLink.id).where(ShareLink.id == parsed.share_id,
                                                ShareLink.revoked_at.is_(None))) is not None


# ---------------------------------------------------------------- secrets out of logs

_REDACTIONS = [
    # query parameters that carry credentials: ?token= (SSE), ?share=, ?sig=, ?access_token=
    (re.compile(r"(?i)([?&;](?:token|access_token|share|sig)=)[^&\s\"'#]+"), r"\1[redacted]"),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=\-]+"), r"\1[redacted]"),
    (re.compile(r"\bfva_[A-Za-z0-9_\-]{8,}"), "fva_[redacted]"),
]


def redact(text: str) -> str:
    """``text`` with API tokens, share tokens and image signatures replaced by ``[redacted]``."""
    if not isinstance(text, str):
        return text
    for rx, repl in _REDACTIONS:
        text = rx.sub(repl, text)
    return text


class RedactSecrets(logging.Filter):
    """A logging filter that removes credentials from a record before any handler formats it.

    uvicorn's access formatter unpacks ``record.args`` as (client, method, path, version,
    status), so string arguments are redacted in place, keeping the tuple's shape; a
    record whose non-string arguments format to a secret is replaced by its redacted text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
            if not all(isinstance(a, (str, int, float)) for a in args):
                try:
                    text = record.getMessage()
                except Exception:
                    return True
                clean = redact(text)
                if clean != text:
                    record.msg, record.args = clean, ()
        elif isinstance(args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in args.items()}
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


#: the loggers whose records (and handlers) get the filter: uvicorn's and the app's
REDACTED_LOGGERS = ("", "uvicorn", "uvicorn.access", "uvicorn.error", "fvaudit", "celery", "gunicorn.access")
_FILTER = RedactSecrets()


def install_log_redaction() -> None:
    """Attach :class:`RedactSecrets` to uvicorn's and the app's loggers and their handlers.

    A logger's filters see only records created on it, a handler's see every record it
    emits, so both are covered: each listed logger (the root among them), every existing
    ``fvaudit.*`` and ``uvicorn.*`` logger, all their handlers and ``logging.lastResort``
    (what prints a warning when no handler is configured). Idempotent; call it again after a
    logging reconfiguration (uvicorn's ``dictConfig`` replaces handlers).
    """
    names = set(REDACTED_LOGGERS) | {n for n in logging.root.manager.loggerDict
                                     if n.split(".")[0] in ("fvaudit", "uvicorn", "celery")}
    handlers = [logging.lastResort] if logging.lastResort is not None else []  # no handler configured
    for name in names:
        lg = logging.getLogger(name)
        if _FILTER not in lg.filters:
            lg.addFilter(_FILTER)
        handlers.extend(lg.handlers)
    for h in handlers:
        if _FILTER not in h.filters:
            h.addFilter(_FILTER)
