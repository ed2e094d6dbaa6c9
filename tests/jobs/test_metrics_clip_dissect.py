"""The metrics job's CLIP-Dissect describer (issue 22), without the stack: with a real CLIP (here a
stand-in with both towers and fixed vectors) every unit gets a concept before and in each state,
stored as its own label rows; without one the run says why and stores none."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from fvaudit.jobs.kinds.metrics import _ClipDissect, label_rows


class _Clip:
    is_clip, id = True, "fake-clip"

    def embed_text(self, texts):
        # a stripe direction for "stripe", a dot direction for "dot", neither for the rest
        return np.stack([[1.0, 0.0] if t == "stripe" else [0.0, 1.0] if t == "dot" else [0.5, 0.5] for t in texts])


class _Embedding:
    embedder = _Clip()

    def __init__(self, vectors):
        self.vectors = vectors
        self.calls = []

    def embed(self, ids):
        self.calls.append(np.asarray(ids).shape)
        return np.asarray([[self.vectors[i] for i in row] for row in np.asarray(ids)])


def _inputs():
    # 4 validation images: 0, 1 striped; 2, 3 dotted. Unit 0 fires on stripes before and on dots
    # after (the attack moved it); unit 1 fires on dots throughout; unit 2 is dead
    before = np.array([[5.0, 0.0, 0.0], [4.0, 0.1, 0.0], [0.0, 5.0, 0.0], [0.1, 4.0, 0.0]])
    after = np.array([[0.0, 0.0, 0.0], [0.1, 0.1, 0.0], [5.0, 5.0, 0.0], [4.0, 4.0, 0.0]])
    val = SimpleNamespace(ids=np.arange(4), class_names=["stripe", "dot"])
    return SimpleNamespace(val=val, states=["selected"], init_val={"relu3": SimpleNamespace(scores=before)},
                           final_val={"selected": {"relu3": SimpleNamespace(scores=after)}})


def test_labels_before_and_after_and_their_rows():
    logs = []
    ctx = SimpleNamespace(log=logs.append, reporter=SimpleNamespace(stage=lambda *a, **k: None))
    emb = _Embedding({0: [1.0, 0.0], 1: [0.9, 0.1], 2: [0.0, 1.0], 3: [0.1, 0.9]})
    cd = _ClipDissect.open(_inputs(), emb, ctx)
    assert cd.why is None and cd.concepts[:2] == ["stripe", "dot"] and emb.calls == [(1, 4)]   # all images, once
    labels = cd.labels(_inputs(), "relu3", dead=[2])
    assert [l.concept for l in labels["before"]] == ["stripe", "dot", None]
    assert [l.concept for l in labels["selected"]] == ["dot", "dot", None]
    rows = [{"layer": "relu3", "unit": u, "attacked": u == 0,
             "extra": {"labels_clip": {k: v[u].to_json() for k, v in labels.items()}}} for u in range(3)]
    out = [r for r in label_rows(7, 3, rows) if r["describer"] == "clip-dissect"]
    got = {(r["unit"], r["state"]): (r["label"], r["changed"]) for r in out}
    assert got == {(0, "before"): ("stripe", False), (0, "selected"): ("dot", True),
                   (1, "before"): ("dot", False), (1, "selected"): ("dot", False)}
    assert all(r["label_key"] == r["label"].lower() and r["p_value"] is None for r in out)


def test_without_a_real_clip_the_run_says_why_and_stores_none():
    logs = []
    ctx = SimpleNamespace(log=logs.append, reporter=SimpleNamespace(stage=lambda *a, **k: None))
    stand_in = SimpleNamespace(embedder=SimpleNamespace(is_clip=False, id="classifier:efficientnet-lite0:pooled",
                                                        description="EfficientNet-Lite0 stand-in"))
    cd = _ClipDissect.open(_inputs(), stand_in, ctx)
    assert cd.similarity is None and "no text tower" in cd.why and cd.labels(_inputs(), "relu3", []) is None
    assert logs and "CLIP-Dissect labels unavailable" in logs[0]
    assert _ClipDissect.open(_inputs(), None, ctx).why is not None          # embedder "none"
