"""API tokens, share tokens and signed image URLs.

* API tokens (``fva_`` + 43 url-safe chars) are stored as SHA-256 hashes only;
  ``fvaudit token create`` prints one once.
* Share tokens (43 url-safe chars, 256 bits) grant read-only access to one run.
* Image URLs handed out by the API carry an HMAC of (image set, image id), so an
  ``<img src>`` works without credentials and only for images the API has shown.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from fvaudit.db.models import APIToken, User, utcnow

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


def sign_image(key: bytes, image_set_id: int, image_id: int) -> str:
    mac = hmac.new(key, f"img:{image_set_id}:{image_id}".encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def check_image_sig(key: bytes, image_set_id: int, image_id: int, sig: str | None) -> bool:
    if not sig or not sig.isascii():
        return False
    return hmac.compare_digest(sign_image(key, image_set_id, image_id).encode(), sig.encode())
