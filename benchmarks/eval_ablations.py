"""Query-side changes that use only the index's own model, scored like the default.

The ``ablate`` stage of ``eval_retrieval.py``: each variant changes one thing in the default
hybrid search (50 candidates, z-score fusion, documents first with the page-centroid term) and
is scored on every question of both sets. None is used by the library; they record what was
tried to close the gap on paraphrased questions without a stronger model:

* ``lead-in removed``: "How can I ..." / "Is there a way to ..." cut before embedding;
* ``page title``: plus ``w ×`` the z-score of the question's cosine with each candidate page's
  title (from the HTML ``<title>``);
* ``centroid feedback``: the question vector moved towards the mean centroid of the top 3
  pages (``q + g × mean``), and the pages' cosines with it added again with weight ``b``;
* ``keyword feedback``: the keyword query extended with the ``t`` most distinctive terms
  (tf × idf over the index's chunks) of the top ``c`` chunks, then searched again;
* ``page top-m``: plus the z-score of the mean of each candidate page's best ``m`` chunk
  similarities over all of its chunks (not only those among the candidates).
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from parallelrag.pipeline import Index
from parallelrag.pipeline.grouping import rank_by_document
from parallelrag.store.base import Hit

Ranked = tuple[list[str], list[str]]
_LEAD_IN = re.compile(
    r"^(how (can|do|would|should) (i|we|you)|what(?:'s| is) the (best |easiest |simplest )?way to"
    r"|is there (a|any) way to|can i|what should i use to|which [a-z ]+ should i use to)\s+",
    re.I)
_TERM = re.compile(r"[a-z][a-z0-9_]{2,}")


def _z(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    out: np.ndarray = (a - a.mean()) / (float(a.std()) or 1.0)
    return out


def stage_ablations(index: Index, questions: dict[str, Sequence[Any]],
                    page_of: Callable[[str], str], score: Callable[..., Any],
                    stopwords: frozenset[str]) -> dict[str, Any]:
    """R@1/5/10, strict R@5 and MRR of each variant (and the default) per question set."""
    st: Any = index.store
    vecs: dict[str, np.ndarray] = {}
    titles: dict[str, str] = {}
    df: collections.Counter[str] = collections.Counter()
    n_chunks = 0
    for rec, chunks, v in st.export_documents([d.source for d in st.documents()]):
        vecs[rec.source] = np.asarray(v, dtype=np.float32)
        titles[rec.source] = str(rec.metadata.get("title", "")).split(" — Python ")[0]
        for c in chunks:
            n_chunks += 1
            df.update(set(_TERM.findall(c.text.lower())))
    cent = {s: v.mean(0) / (np.linalg.norm(v.mean(0)) or 1.0) for s, v in vecs.items()}
    srcs = list(titles)
    tvec = dict(zip(srcs, (np.asarray(t, dtype=np.float32)
                           for t in index.embedder.embed_many([titles[s] for s in srcs])),
                    strict=True))

    def ranked(hits: Sequence[Hit], extra: dict[str, float] | None, q: np.ndarray) -> list[Hit]:
        sources = list(dict.fromkeys(h.source for h in hits))
        doc = dict(zip(sources, _z([float(cent[s] @ q) for s in sources]), strict=True))
        for s, x in (extra or {}).items():
            doc[s] = doc.get(s, 0.0) + x
        return rank_by_document(hits, 10, None, doc)

    def terms(question: str, hits: Sequence[Hit], c: int, t: int) -> list[str]:
        tf: collections.Counter[str] = collections.Counter()
        for h in hits[:c]:
            tf.update(_TERM.findall(h.text.lower()))
        asked = set(_TERM.findall(question.lower()))
        w = {x: n * math.log(n_chunks / (1 + df[x])) for x, n in tf.items()
             if x not in asked and x not in stopwords and df[x] > 1}
        return sorted(w, key=lambda x: -w[x])[:t]

    def variant(question: str, q: np.ndarray, qn: np.ndarray, kind: str,
                p: tuple[float, ...]) -> list[Hit]:
        if kind == "lead-in removed":
            hits = st.search_hybrid(question, qn, 50)
            return ranked(hits, None, qn)
        hits = st.search_hybrid(question, q, 50)
        sources = list(dict.fromkeys(h.source for h in hits))
        if kind == "default":
            return ranked(hits, None, q)
        if kind == "page title":
            zt = _z([float(tvec[s] @ q) for s in sources])
            return ranked(hits, {s: p[0] * x for s, x in zip(sources, zt, strict=True)}, q)
        if kind == "page top-m":
            m = int(p[0])
            zt = _z([float(np.sort(vecs[s] @ q)[-m:].mean()) for s in sources])
            return ranked(hits, dict(zip(sources, zt, strict=True)), q)
        first = ranked(hits, None, q)
        if kind == "centroid feedback":
            top = list(dict.fromkeys(h.source for h in first))[:3]
            q2 = q + p[0] * np.mean([cent[s] for s in top], 0)
            q2 /= np.linalg.norm(q2)
            z2 = _z([float(cent[s] @ q2) for s in sources])
            return ranked(hits, {s: p[1] * x for s, x in zip(sources, z2, strict=True)}, q)
        # keyword feedback
        more = terms(question, first, int(p[0]), int(p[1]))
        return ranked(st.search_hybrid(question + " " + " ".join(more), q, 50), None, q)

    grid: list[tuple[str, tuple[float, ...]]] = [("default", ()), ("lead-in removed", ())]
    grid += [("page title", (w,)) for w in (0.25, 0.5, 1.0)]
    grid += [("centroid feedback", (g, b)) for g in (0.5, 1.0, 2.0) for b in (0.5, 1.0, 2.0)]
    grid += [("keyword feedback", (c, t)) for c in (3, 5, 10) for t in (3, 5, 10)]
    grid += [("page top-m", (m,)) for m in (1, 3, 5)]
    out: dict[str, Any] = {}
    for qset, qs in questions.items():
        texts = [q.question for q in qs]
        qv = [np.asarray(v, dtype=np.float32) for v in index.embedder.embed_many(texts)]
        qn = [np.asarray(v, dtype=np.float32) for v in index.embedder.embed_many(
            [_LEAD_IN.sub("", t).rstrip("?") or t for t in texts])]
        for kind, p in grid:
            rows: list[Ranked] = []
            for q, v, vn in zip(qs, qv, qn, strict=True):
                hits = variant(q.question, v, vn, kind, p)
                rows.append(([page_of(h.source) for h in hits], [h.text for h in hits]))
            label = kind + ("" if not p else " " + ",".join(f"{x:g}" for x in p))
            r = score(qs, rows, [0.0]).row()
            out.setdefault(label, {})[qset] = {k: r[k] for k in ("r1", "r5", "r10", "strict5",
                                                                  "mrr")}
    return out
