"""Content-addressed artifact store: files named by their SHA-256 under DATA_DIR/artifacts.

``put_file`` / ``put_bytes`` hash the content, move it to ``<sha[:2]>/<sha>.<ext>``
(atomically; identical content is stored once) and upsert the ``artifacts`` row. Score
matrices (``.npy``), checkpoints (``.safetensors``) and thumbnails (``.png``) live here;
rows hold the hash.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fvaudit.db.tables import Artifact

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def rel_path(self, sha: str, ext: str) -> str:
        ext = ext if not ext or ext.startswith(".") else f".{ext}"
        return f"{sha[:2]}/{sha}{ext}"

    def path(self, artifact: Artifact | str) -> Path:
        rel = artifact.path if isinstance(artifact, Artifact) else artifact
        return self.root / rel

    def _record(self, db: Session, sha: str, kind: str, rel: str, size: int) -> Artifact:
        art = db.scalar(select(Artifact).where(Artifact.sha256 == sha))
        if art is not None:
            return art
        art = Artifact(sha256=sha, kind=kind, path=rel, size=size)
        try:
            with db.begin_nested():
                db.add(art)
                db.flush()
        except IntegrityError:   # another process recorded the same content first
            art = db.scalar(select(Artifact).where(Artifact.sha256 == sha))
            assert art is not None
        return art

    def put_file(self, db: Session, src: Path, kind: str, ext: str | None = None, move: bool = True) -> Artifact:
        """Store ``src`` (moved when ``move``); returns its (possibly pre-existing) row."""
        src = Path(src)
        ext = ext if ext is not None else "".join(src.suffixes[-1:])
        sha = sha256_file(src)
        rel = self.rel_path(sha, ext)
        dest = self.root / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            if move:
                try:
                    os.replace(src, tmp)
                except OSError:           # another filesystem
                    shutil.copyfile(src, tmp)
                    src.unlink(missing_ok=True)
            else:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        elif move:
            src.unlink(missing_ok=True)
        return self._record(db, sha, kind, rel, dest.stat().st_size)

    def put_bytes(self, db: Session, data: bytes, kind: str, ext: str) -> Artifact:
        sha = hashlib.sha256(data).hexdigest()
        rel = self.rel_path(sha, ext)
        dest = self.root / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{sha[:8]}", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, dest)
        return self._record(db, sha, kind, rel, len(data))


def get_store() -> ArtifactStore:
    from fvaudit.config import get_settings

    return ArtifactStore(get_settings().artifacts_dir)
