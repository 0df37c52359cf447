"""Retrieval quality of ``parallelrag.pipeline.Index`` on a real corpus: the Python 3.11 docs.

Two question sets with known answers, run through the real pipeline (HTML loader → splitter →
local embedder → embedded store) in the three search modes (``vector``, ``keyword`` = BM25,
``hybrid`` = fusion of both):

* ``keyword``: ``benchmarks/eval_questions.json``, 60 questions most of which name the API
  they ask about (the keyword-friendly set);
* ``paraphrased``: ``benchmarks/eval_questions_paraphrased.json``, 80 questions in a user's
  words, with no module, function or class names;
* and ``benchmarks/eval_questions_offcorpus.json``: 15 questions the corpus does not answer,
  used to calibrate the weak-support threshold of ``Index.answer``.

Reported per index, set and mode: page R@1/R@5/R@10 (a chunk of an expected page in the top
k), strict R@5 (... a chunk that holds an answer phrase), MRR (first expected-page hit within
the top 10), and query latency p50/p99 of ``Index.search`` (embedding the question included).

Indexes (``benchmarks/.cache/eval-<name>/``, reused across runs; ``--fresh`` rebuilds):

* ``minilm-128``: all-MiniLM-L6-v2, the index's default splitter (128/16 model tokens), chunks
  without chunk context (``Index.open(chunk_context=False)``): the offline default;
* ``minilm-128-ctx``: the same with chunk context (``chunk_context=True``: title + heading
  path), the context step;
* ``wordllama``: wordllama 256-d static vectors, default splitter, all 530 pages (opt-in).

The MiniLM indexes hold the subset: every expected page plus 100 pages drawn with a fixed seed
from the whole corpus (MiniLM embeds ~10-30 chunks/s on two busy cores).

Extra stages (each on the ``--stage-config`` index, default ``minilm-128``):

* ``--tune``: the fusion grid (method, weights, RRF constant, candidate depth) evaluated from
  the vector and keyword candidate lists, with 2-fold cross-validation (tune on half the
  questions of both sets, score on the other half);
* ``--rerank SPEC``: hybrid top-N reranked (``sim`` = the simulator's token-overlap ``/rerank``
  route; a folder path = a sentence-transformers CrossEncoder; ``llm`` = the listwise LLM
  reranker over the simulated chat model);
* ``--expand``: multi-query / HyDE retrieval with the simulated chat model;
* ``--ablate``: query-side variants that use only the index's model (``eval_ablations.py``);
* ``--calibrate``: best-hit vector scores of answerable vs off-corpus questions, and the
  weak-support threshold they give.

Run: ``.venv/bin/python benchmarks/eval_retrieval.py`` (default: both MiniLM indexes, all
stages with the simulator); ``--check`` only verifies the question files (2 s); ``--misses``
lists the questions each mode missed at 5. The corpus comes from Debian's ``python3.11-doc``
(``apt-get download`` + ``dpkg-deb -x`` into ``benchmarks/.cache``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import glob
import itertools
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from parallelrag.cache import EmbeddingCache
from parallelrag.loaders import load_file
from parallelrag.pipeline import Index, IngestProgress
from parallelrag.pipeline.grouping import (
    DEFAULT_DOCUMENT_RANKING,
    DocumentRanking,
    rank_by_document,
)
from parallelrag.store.base import Hit
from parallelrag.store.fusion import DEFAULT_FUSION, FusionConfig, fuse

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
PACKAGE = "python3.11-doc"
DOC_ROOT = CACHE / "python3.11-doc-root" / "usr/share/doc/python3.11/html"
HTML_MARK = "usr/share/doc/python3.11/html/"
SETS = {
    "keyword": HERE / "eval_questions.json",
    "paraphrased": HERE / "eval_questions_paraphrased.json",
}
OFFCORPUS = HERE / "eval_questions_offcorpus.json"
MODES = ("vector", "keyword", "hybrid")
KS = (1, 5, 10)
SUBSET_DISTRACTORS = 100
SUBSET_SEED = 0
DEPTH = 100  # candidate lists gathered for fusion tuning
STAGES = ("tune", "calibrate", "cost", "rerank", "expand", "ablate")

_WS = re.compile(r"\s+")


def norm(text: str) -> str:
    """Whitespace-normalized text: the form answer phrases are matched in."""
    return _WS.sub(" ", text)


# ---------------------------------------------------------------------------------------- corpus
def ensure_corpus() -> Path:
    """The HTML root of the Python 3.11 docs, downloading and unpacking the package if needed."""
    if DOC_ROOT.is_dir():
        return DOC_ROOT
    CACHE.mkdir(parents=True, exist_ok=True)
    debs = sorted(glob.glob(str(CACHE / f"{PACKAGE}_*.deb")))
    if not debs:
        cmd = ["apt-get", "download", PACKAGE]
        if subprocess.run(cmd, cwd=CACHE, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, check=False)
            subprocess.run(cmd, cwd=CACHE, capture_output=True, check=True)
        debs = sorted(glob.glob(str(CACHE / f"{PACKAGE}_*.deb")))
    subprocess.run(["dpkg-deb", "-x", debs[-1], str(CACHE / "python3.11-doc-root")], check=True)
    if not DOC_ROOT.is_dir():
        raise SystemExit(f"{debs[-1]} has no {DOC_ROOT.relative_to(CACHE)}")
    return DOC_ROOT


def all_pages(root: Path) -> list[str]:
    """Every HTML page, relative to ``root`` with ``/`` separators, sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html")
                  if not any(part.startswith((".", "_"))
                             for part in p.relative_to(root).parts[:-1]))


# ------------------------------------------------------------------------------------- questions
@dataclass(frozen=True)
class Question:
    id: str
    question: str
    pages: tuple[str, ...]  # acceptable pages, the primary one first
    answers: tuple[str, ...]  # phrases holding the answer (any one counts)
    kind: str
    paraphrased: bool


def load_questions(path: Path) -> list[Question]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Question(q["id"], q["question"], tuple(q["pages"]), tuple(q["answers"]), q["kind"],
                     bool(q["paraphrased"])) for q in data["questions"]]


def load_offcorpus(path: Path = OFFCORPUS) -> list[str]:
    return [q["question"] for q in json.loads(path.read_text(encoding="utf-8"))["questions"]]


def check_questions(questions: Sequence[Question], root: Path) -> list[str]:
    """Problems with a question file: duplicate ids, unknown pages, pages holding none of the
    answer phrases, phrases found in none of the pages.

    The text is what the index's own HTML loader makes of the page, so a phrase found here is
    findable in the indexed chunks (unless a chunk boundary cuts it).
    """
    problems: list[str] = []
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        problems.append("duplicate question ids")
    texts: dict[str, str] = {}
    for q in questions:
        if not q.pages or not q.answers:
            problems.append(f"{q.id}: needs pages and answers")
        found: set[str] = set()
        for page in q.pages:
            if page not in texts:
                path = root / page
                if not path.is_file():
                    problems.append(f"{q.id}: no page {page}")
                    continue
                docs = load_file(path)
                if not isinstance(docs, list):
                    problems.append(f"{q.id}: {page} did not load: {docs.reason}")
                    continue
                texts[page] = norm("\n".join(d.text for d in docs))
            if page in texts:
                here = {a for a in q.answers if norm(a) in texts[page]}
                if not here:
                    problems.append(f"{q.id}: no answer phrase in {page}")
                found |= here
        for a in q.answers:
            if a not in found:
                problems.append(f"{q.id}: answer {a!r} in none of its pages")
    return problems


def subset_pages(questions: Sequence[Question], pages: Sequence[str],
                 distractors: int = SUBSET_DISTRACTORS, seed: int = SUBSET_SEED) -> list[str]:
    """The expected pages plus a seeded sample of ``distractors`` pages of the whole corpus.

    The sample does not depend on the questions, so adding a question adds only its own pages
    to the subset (and an incremental re-ingest embeds only those).
    """
    expected = {p for q in questions for p in q.pages}
    extra = random.Random(seed).sample(list(pages), min(len(pages), distractors))
    return sorted(expected | set(extra))


# --------------------------------------------------------------------------------------- indexes
@dataclass(frozen=True)
class Config:
    name: str
    embedder: str
    subset: bool
    context: bool
    describe: str
    tokens: int | None = None  # MiniLM token chunks (size, overlap size // 8); None: the default


CONFIGS: dict[str, Config] = {c.name: c for c in (
    Config("minilm-128", "minilm", True, False,
           "MiniLM-L6, 128/16 tokens, no chunk context, subset"),
    Config("minilm-128-ctx", "minilm", True, True,
           "MiniLM-L6, 128/16 tokens, title + heading path context, subset"),
    Config("minilm-64", "minilm", True, False,
           "MiniLM-L6, 64/8 tokens, no chunk context, subset", tokens=64),
    Config("wordllama-noctx", "wordllama", False, False,
           "wordllama 256-d, 1500/150 chars, no chunk context, all pages"),
    Config("wordllama", "wordllama", False, True,
           "wordllama 256-d, 1500/150 chars, context, all pages"),
)}
DEFAULT_CONFIGS = ("minilm-128", "minilm-128-ctx")


@dataclass
class Build:
    pages: int
    chunks: int
    ingest_s: float  # this run's ingest call (≈0 when the index was up to date)
    embedded: int  # chunks embedded by this run
    full_build: dict[str, Any] = field(default_factory=dict)  # the last build from scratch


def open_index(cfg: Config, root: Path, pages: Sequence[str], fresh: bool) -> tuple[Index, Build]:
    path = CACHE / f"eval-{cfg.name}"
    if fresh and path.exists():
        shutil.rmtree(path)
    was_new = not path.exists()
    splitter = None
    if cfg.tokens is not None:
        from parallelrag.splitters import TokenSplitter

        splitter = TokenSplitter(cfg.tokens, cfg.tokens // 8, cfg.embedder)
    index = Index.open(path, embedder=cfg.embedder, splitter=splitter, chunk_context=cfg.context)
    last = [0.0]

    def progress(p: IngestProgress) -> None:  # a line every 15 s on long (minilm) builds
        if p.elapsed_s - last[0] >= 15:
            last[0] = p.elapsed_s
            print(f"[{cfg.name}]   {p.elapsed_s:.0f} s: {p.documents_done} pages, "
                  f"{p.embedded} chunks embedded ({p.embeddings_per_s:.0f}/s)", flush=True)

    # Embeddings cached by text in the index directory: a re-run (or a store migration that
    # re-ingests) embeds only texts it has not seen; --fresh deletes the cache with the index.
    cache = EmbeddingCache(path / "embeddings.sqlite")
    index.embedder.cache = cache
    t0 = time.perf_counter()
    try:
        report = index.ingest([root / p for p in pages], progress=progress, prune=False)
    finally:
        # Queries must pay for their embedding: the cache would answer repeated questions.
        index.embedder.cache = None
        cache.close()
    ingest_s = time.perf_counter() - t0
    if report.failed:
        raise SystemExit(f"{cfg.name}: ingest failed for {report.failed[:3]}")
    # Keep exactly the wanted pages (the subset changes when questions change).
    wanted = set(pages)
    for doc in index.store.documents():
        if page_of_source(doc.source) not in wanted:
            index.remove(doc.source)
    stats = index.stats()
    meta_path = path / "eval_build.json"
    full: dict[str, Any] = {}
    if meta_path.exists():
        full = json.loads(meta_path.read_text(encoding="utf-8"))
    if was_new:  # a build from scratch: its timing is the ingest cost of this corpus
        full = {"embedded": report.embedded, "chunks_written": report.chunks,
                "wall_s": round(report.wall_s, 2), "stages": report.stages,
                "chunks_per_s": round(report.embedded / max(report.wall_s, 1e-9), 1)}
        meta_path.write_text(json.dumps(full, indent=1), encoding="utf-8")
    return index, Build(pages=len(pages), chunks=int(stats.get("chunks", 0)), ingest_s=ingest_s,
                        embedded=report.embedded, full_build=full)


def page_of_source(source: str) -> str:
    src = source.split("#", 1)[0].replace(os.sep, "/")
    i = src.find(HTML_MARK)
    return src[i + len(HTML_MARK):] if i >= 0 else src


# ----------------------------------------------------------------------------------- evaluation
@dataclass
class Scores:
    n: int
    page: dict[int, float]
    strict5: float
    mrr: float
    p50_ms: float
    p99_ms: float
    misses5: list[str]  # ids of questions with no expected-page hit in the top 5

    def row(self) -> dict[str, Any]:
        return {"n": self.n, "r1": round(self.page[1], 4), "r5": round(self.page[5], 4),
                "r10": round(self.page[10], 4), "strict5": round(self.strict5, 4),
                "mrr": round(self.mrr, 4), "p50_ms": round(self.p50_ms, 1),
                "p99_ms": round(self.p99_ms, 1), "misses5": self.misses5}


def first_ranks(q: Question, pages: Sequence[str], texts: Sequence[str]) -> tuple[int | None,
                                                                                 int | None]:
    """1-based rank of the first expected-page hit, and of the first one holding an answer."""
    answers = [norm(a) for a in q.answers]
    first_page = first_strict = None
    for rank, (page, text) in enumerate(zip(pages, texts, strict=True), 1):
        if page in q.pages:
            if first_page is None:
                first_page = rank
            if first_strict is None and any(a in norm(text) for a in answers):
                first_strict = rank
    return first_page, first_strict


def score(questions: Sequence[Question], ranked: Sequence[tuple[Sequence[str], Sequence[str]]],
          times: Sequence[float]) -> Scores:
    hits = {k: 0 for k in KS}
    strict5 = 0
    rr = 0.0
    misses: list[str] = []
    for q, (pages, texts) in zip(questions, ranked, strict=True):
        fp, fs = first_ranks(q, pages[:10], texts[:10])
        for k in KS:
            hits[k] += fp is not None and fp <= k
        strict5 += fs is not None and fs <= 5
        rr += 1.0 / fp if fp is not None else 0.0
        if fp is None or fp > 5:
            misses.append(q.id)
    n = len(questions)
    ms = sorted(1000 * t for t in times) or [0.0]
    return Scores(n=n, page={k: hits[k] / n for k in KS}, strict5=strict5 / n, mrr=rr / n,
                  p50_ms=statistics.median(ms), p99_ms=ms[min(len(ms) - 1, int(0.99 * len(ms)))],
                  misses5=misses)


def run_search(index: Index, questions: Sequence[Question], mode: str,
               **kw: Any) -> tuple[list[tuple[list[str], list[str]]], list[float]]:
    index.search("warm-up query", k=10, mode=mode, **kw)
    ranked: list[tuple[list[str], list[str]]] = []
    times: list[float] = []
    for q in questions:
        t0 = time.perf_counter()
        hits = index.search(q.question, k=10, mode=mode, **kw)
        times.append(time.perf_counter() - t0)
        ranked.append(([page_of_source(h.source) for h in hits], [h.text for h in hits]))
    return ranked, times


# ----------------------------------------------------------------------------- fusion tuning
# An experiment for the keyword side (not what the store does): English function words dropped
# from the BM25 query, as a store could do before building its FTS query.
_STOP_TEXT = """a an and are as at be but by can do does for from how i if in into is it
its me my of on or so than that the their them then there these this to was what when where which
who why will with would you your should could there's i'm it's"""
STOPWORDS = frozenset(_STOP_TEXT.split())


def without_stopwords(text: str) -> str:
    words = re.findall(r"\w+", text)
    kept = [w for w in words if w.lower() not in STOPWORDS]
    return " ".join(kept) if kept else text


@dataclass
class Lists:
    """Per question: the vector and keyword candidate lists (id, score), and id → (page, text);
    ``kw_stop``: keyword lists for the query without stop words (experiment)."""

    vec: list[list[tuple[int, float]]]
    kw: list[list[tuple[int, float]]]
    kw_stop: list[list[tuple[int, float]]]
    info: dict[int, tuple[str, str]]
    docs: list[dict[str, float]] = field(default_factory=list)  # page → centroid cosine


def gather_lists(index: Index, questions: Sequence[Question], depth: int = DEPTH) -> Lists:
    vec: list[list[tuple[int, float]]] = []
    kw: list[list[tuple[int, float]]] = []
    kw_stop: list[list[tuple[int, float]]] = []
    info: dict[int, tuple[str, str]] = {}
    docs: list[dict[str, float]] = []
    for q in questions:
        qv = index.embedder.embed(q.question)
        vh = index.store.search_vector(qv, depth)
        kh = index.store.search_keyword(q.question, depth)
        ks = index.store.search_keyword(without_stopwords(q.question), depth)
        for h in itertools.chain(vh, kh, ks):
            info[h.chunk_id] = (page_of_source(h.source), h.text)
        vec.append([(h.chunk_id, float(h.score)) for h in vh])
        kw.append([(h.chunk_id, float(h.score)) for h in kh])
        kw_stop.append([(h.chunk_id, float(h.score)) for h in ks])
        sources = [h.source for h in itertools.chain(vh, kh)]
        docs.append({page_of_source(s): v
                     for s, v in index.store.document_scores(qv, sources).items()})  # type: ignore[attr-defined]
    return Lists(vec, kw, kw_stop, info, docs)


def fused_ranked(lists: Lists, idx: Sequence[int], cfg: FusionConfig,
                 stop: bool = False) -> list[tuple[list[str], list[str]]]:
    out = []
    kws = lists.kw_stop if stop else lists.kw
    for i in idx:
        fz = fuse(lists.vec[i][:cfg.candidates], kws[i][:cfg.candidates], 10, config=cfg)
        out.append(([lists.info[f.id][0] for f in fz], [lists.info[f.id][1] for f in fz]))
    return out


def single_ranked(lst: list[list[tuple[int, float]]], info: dict[int, tuple[str, str]],
                  idx: Sequence[int]) -> list[tuple[list[str], list[str]]]:
    return [([info[c][0] for c, _ in lst[i][:10]], [info[c][1] for c, _ in lst[i][:10]])
            for i in idx]


def fusion_grid() -> list[FusionConfig]:
    grid: list[FusionConfig] = []
    for depth in (20, 50, 100):
        for c in (10, 30, 60):
            for wk in (0.3, 0.5, 0.7, 1.0):
                grid.append(FusionConfig("rrf", 1.0, wk, c, depth))
        for method in ("minmax", "zscore"):
            for wk in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7):
                grid.append(FusionConfig(method, 1.0 - wk, wk, 60, depth))
    return grid


def tune(questions: dict[str, list[Question]], lists: dict[str, Lists]) -> dict[str, Any]:
    """2-fold cross-validated fusion choice: objective = mean over both sets of (R@5 + MRR)/2."""
    grid = fusion_grid()

    def objective(cfg: FusionConfig, fold: int | None) -> tuple[float, dict[str, Scores]]:
        per: dict[str, Scores] = {}
        for name, qs in questions.items():
            idx = [i for i in range(len(qs)) if fold is None or i % 2 == fold]
            per[name] = score([qs[i] for i in idx], fused_ranked(lists[name], idx, cfg), [])
        val = statistics.mean((s.page[5] + s.mrr) / 2 for s in per.values())
        return val, per

    folds = []
    for fold in (0, 1):
        best = max(grid, key=lambda c: objective(c, fold)[0])
        _, held = objective(best, 1 - fold)
        _, held_default = objective(DEFAULT_FUSION, 1 - fold)
        folds.append({"tuned_on": fold, "best": cfg_dict(best),
                      "held_out": {n: s.row() for n, s in held.items()},
                      "held_out_default": {n: s.row() for n, s in held_default.items()}})
    full = sorted(((objective(c, None)[0], c) for c in grid), key=lambda t: -t[0])
    top = [{"objective": round(v, 4), **cfg_dict(c),
            **{n: {"r5": round(s.page[5], 4), "mrr": round(s.mrr, 4)}
               for n, s in objective(c, None)[1].items()}} for v, c in full[:10]]
    default_row = {n: s.row() for n, s in objective(DEFAULT_FUSION, None)[1].items()}
    # the stop-word experiment: keyword alone, and the best fusion over its lists
    stop: dict[str, Any] = {}
    for name, qs in questions.items():
        idx = list(range(len(qs)))
        stop[f"{name}/keyword"] = score(qs, single_ranked(lists[name].kw, lists[name].info,
                                                          idx), []).row()
        stop[f"{name}/keyword_nostop"] = score(qs, single_ranked(lists[name].kw_stop,
                                                                 lists[name].info, idx),
                                               []).row()

    def objective_stop(cfg: FusionConfig) -> float:
        return statistics.mean(
            (s.page[5] + s.mrr) / 2 for s in (
                score(qs, fused_ranked(lists[n], range(len(qs)), cfg, stop=True), [])
                for n, qs in questions.items()))

    best_stop = max(grid, key=objective_stop)
    stop["best_fusion_nostop"] = cfg_dict(best_stop)
    for name, qs in questions.items():
        stop[f"{name}/hybrid_nostop_best"] = score(
            qs, fused_ranked(lists[name], range(len(qs)), best_stop, stop=True), []).row()
        stop[f"{name}/hybrid_nostop_default"] = score(
            qs, fused_ranked(lists[name], range(len(qs)), DEFAULT_FUSION, stop=True), []).row()
    return {"folds": folds, "top10_all_questions": top, "default": cfg_dict(DEFAULT_FUSION),
            "default_scores": default_row, "grid_size": len(grid), "stopword_experiment": stop}


def ranking_grid() -> list[DocumentRanking]:
    return [DocumentRanking(c, a, r, p, d) for c in (20, 50, 100) for a in (0.0, 0.3)
            for r in (2, 4, 8) for p in (0.5, 1.0, 2.0) for d in (0.0, 0.5, 1.0, 1.5, 2.0)]


def tune_ranking(questions: dict[str, list[Question]], lists: dict[str, Lists]) -> dict[str, Any]:
    """2-fold cross-validated check of the document ranking (hybrid, default fusion): the
    settings tuned on one half of each set against the default, both scored on the other half.
    Objective: mean over both sets of (R@5 + MRR)/2."""
    cache: dict[tuple[DocumentRanking | None, str], list[tuple[list[str], list[str]]]] = {}

    def ranked(cfg: DocumentRanking | None, name: str) -> list[tuple[list[str], list[str]]]:
        if (cfg, name) not in cache:
            ls, out = lists[name], []
            for i in range(len(questions[name])):
                fz = fuse(ls.vec[i][:DEFAULT_FUSION.candidates], ls.kw[i][:DEFAULT_FUSION.candidates],
                          cfg.candidates if cfg else 10)
                hits = [Hit(f.id, ls.info[f.id][1], f.score, ls.info[f.id][0], 0, 0, 0) for f in fz]
                hits = rank_by_document(hits, 10, cfg, ls.docs[i]) if cfg else hits[:10]
                out.append(([h.source for h in hits], [h.text for h in hits]))
            cache[(cfg, name)] = out
        return cache[(cfg, name)]

    def objective(cfg: DocumentRanking | None, fold: int | None) -> tuple[float, dict[str, Scores]]:
        per: dict[str, Scores] = {}
        for name, qs in questions.items():
            idx = [i for i in range(len(qs)) if fold is None or i % 2 == fold]
            rk = ranked(cfg, name)
            per[name] = score([qs[i] for i in idx], [rk[i] for i in idx], [])
        return statistics.mean((s.page[5] + s.mrr) / 2 for s in per.values()), per

    grid = ranking_grid()
    folds = []
    for fold in (0, 1):
        best = max(grid, key=lambda c: objective(c, fold)[0])
        folds.append({"tuned_on": fold, "best": dataclasses.asdict(best),
                      **{f"held_out_{label}": {n: s.row() for n, s in objective(c, 1 - fold)[1].items()}
                         for label, c in (("tuned", best), ("default", DEFAULT_DOCUMENT_RANKING),
                                          ("chunk_order", None))}})
    full = sorted(grid, key=lambda c: -objective(c, None)[0])[:5]
    return {"default": dataclasses.asdict(DEFAULT_DOCUMENT_RANKING), "folds": folds,
            "top5_all_questions": [{"objective": round(objective(c, None)[0], 4),
                                    **dataclasses.asdict(c)} for c in full]}


def cfg_dict(c: FusionConfig) -> dict[str, Any]:
    return {"method": c.method, "vector_weight": c.vector_weight,
            "keyword_weight": c.keyword_weight, "rrf_k": c.rrf_k, "candidates": c.candidates}


# ------------------------------------------------------------------------------- calibration
def calibrate(index: Index, answerable: Sequence[Question], off: Sequence[str]) -> dict[str, Any]:
    """Best vector score of the top hybrid hits, answerable vs off-corpus questions."""
    from parallelrag.pipeline import support

    def top(q: str) -> float:
        return support.support_score(index.search(q, k=5, mode="hybrid"))

    ans = sorted(top(q.question) for q in answerable)
    offs = sorted(top(q) for q in off)
    best: tuple[float, float] = (-1.0, 0.0)
    for t in sorted(set(ans) | set(offs)):
        acc = (sum(a >= t for a in ans) + sum(o < t for o in offs)) / (len(ans) + len(offs))
        if acc > best[0]:
            best = (acc, t)
    th = support.DEFAULT_MIN_SCORES.get(f"{index.embedder.provider}:{index.embedder.model}")
    out: dict[str, Any] = {
        "answerable": {"n": len(ans), "min": ans[0], "p05": ans[int(0.05 * len(ans))],
                       "median": statistics.median(ans)},
        "off_corpus": {"n": len(offs), "max": offs[-1], "median": statistics.median(offs),
                       "scores": [round(o, 3) for o in offs]},
        "best_threshold_here": round(best[1], 3), "best_accuracy_here": round(best[0], 4),
    }
    if th is not None:
        out["shipped_threshold"] = th
        out["shipped"] = {"answerable_refused": sum(a < th for a in ans),
                          "off_corpus_refused": sum(o < th for o in offs)}
    return out


# ------------------------------------------------------------------------------------ stages
def make_reranker(spec: str, sim_url: str | None) -> Any:
    from parallelrag.pipeline import rerank

    if spec == "sim":
        from parallelrag.providers.rerank import HttpReranker

        assert sim_url is not None
        return HttpReranker(sim_url, model="sim-rerank", api_key="sk-sim")
    if spec == "llm":
        from parallelrag.llm import LlmClient

        assert sim_url is not None
        return rerank.LlmReranker(LlmClient.openai("gpt-4o-mini", base_url=sim_url,
                                                   api_key="sk-sim"))
    return rerank.CrossEncoderReranker(spec)


def stage_rerank(index: Index, questions: dict[str, list[Question]], spec: str,
                 sim_url: str | None, depth: int) -> dict[str, Any]:
    rr = make_reranker(spec, sim_url)
    out: dict[str, Any] = {"reranker": spec, "depth": depth}
    for name, qs in questions.items():
        ranked, times = run_search(index, qs, "hybrid", reranker=rr, rerank_depth=depth)
        out[name] = score(qs, ranked, times).row()
    return out


def stage_expand(index: Index, questions: dict[str, list[Question]], sim_url: str,
                 how: str, sample: int = 20) -> dict[str, Any]:
    """Expanded retrieval on a sample of each set (every n-th question), against plain hybrid
    on the same questions: the simulated model's rewrites are not real rewrites, so this
    measures the plumbing and its cost, not what a real model would gain."""
    from parallelrag.llm import LlmClient
    from parallelrag.pipeline import expand

    llm = LlmClient.openai("gpt-4o-mini", base_url=sim_url, api_key="sk-sim")
    out: dict[str, Any] = {"expansion": how, "sample": sample}
    for name, all_qs in questions.items():
        qs = all_qs[::max(1, len(all_qs) // sample)]
        base, _ = run_search(index, qs, "hybrid")
        out[f"{name}/hybrid_same_questions"] = score(qs, base, []).row()
        ranked = []
        times = []
        for q in qs:
            t0 = time.perf_counter()
            hits = asyncio.run(expand.expanded_search(index, q.question, llm, k=10, how=how))
            times.append(time.perf_counter() - t0)
            ranked.append(([page_of_source(h.source) for h in hits], [h.text for h in hits]))
        out[name] = score(qs, ranked, times).row()
    return out


def stage_context_cost(index: Index, n: int = 100, rounds: int = 2) -> dict[str, Any]:
    """Embedding time of ``n`` stored chunks with and without their context (alternating
    rounds, medians): what the context adds to ingest on this machine."""
    total = int(index.stats().get("chunks", 0))
    ids = random.Random(1).sample(range(1, total + 1), min(n, total))
    hits = [h for h in index.store.get_chunks(ids) if h.context]
    plain = [h.text for h in hits]
    ctx = [f"{h.context}\n\n{h.text}" for h in hits]
    times: dict[str, list[float]] = {"text": [], "context+text": []}
    for _ in range(rounds):
        for name, texts in (("text", plain), ("context+text", ctx)):
            t0 = time.perf_counter()
            index.embedder.embed_many(texts)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"chunks": len(hits), "seconds": {k: round(v, 2) for k, v in med.items()},
            "ratio": round(med["context+text"] / max(med["text"], 1e-9), 3),
            "mean_context_chars": round(statistics.mean(len(h.context) for h in hits), 1)
            if hits else 0}


def stage_ranking_cost(index: Index, questions: Sequence[Question], rounds: int = 2
                       ) -> dict[str, Any]:
    """Search latency (k=5, question embeddings cached) in document and chunk order, both
    alternating over ``rounds`` passes of every question: what the document order costs."""
    out: dict[str, Any] = {}
    for mode in MODES:
        times: dict[str, list[float]] = {"document": [], "chunk": []}
        for r in range(rounds):
            for q in questions:
                for rank_by in ("document", "chunk") if r % 2 == 0 else ("chunk", "document"):
                    t0 = time.perf_counter()
                    index.search(q.question, k=5, mode=mode, rank_by=rank_by)
                    times[rank_by].append(time.perf_counter() - t0)
        out[mode] = {rb: {"p50_ms": round(1000 * statistics.median(v), 2),
                          "p99_ms": round(1000 * sorted(v)[min(len(v) - 1, int(0.99 * len(v)))], 2)}
                     for rb, v in times.items()}
    return out


# --------------------------------------------------------------------------------------- report
def table(rows: list[tuple[str, str, str, Scores]]) -> str:
    lines = ["| index | set | mode | R@1 | R@5 | R@10 | strict R@5 | MRR | p50 ms | p99 ms |",
             "|" + "---|" * 10]
    for name, qset, mode, s in rows:
        lines.append(f"| {name} | {qset} | {mode} | {s.page[1]:.2f} | {s.page[5]:.2f} "
                     f"| {s.page[10]:.2f} | {s.strict5:.2f} | {s.mrr:.2f} | {s.p50_ms:.0f} "
                     f"| {s.p99_ms:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                    help=f"comma-separated, from {', '.join(CONFIGS)}, or 'all'")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--rank-by", default="document,chunk",
                    help="Index.search rank_by values to report (document: the default order)")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--fresh", action="store_true", help="delete and rebuild the indexes")
    ap.add_argument("--check", action="store_true", help="only verify the question files")
    ap.add_argument("--misses", action="store_true", help="list questions missed at 5")
    ap.add_argument("--stage-config", default="minilm-128")
    ap.add_argument("--stages", default=",".join(STAGES),
                    help=f"extra stages on --stage-config, from {', '.join(STAGES)} ('' for none)")
    ap.add_argument("--rerank", default="sim,llm",
                    help="rerankers to measure: sim, llm, a CrossEncoder folder ('' for none)")
    ap.add_argument("--rerank-depth", type=int, default=20)
    ap.add_argument("--latency-sample", type=int, default=20,
                    help="questions per set timed with the query embedding uncached")
    ap.add_argument("--json", type=Path, default=CACHE / "eval-results.json")
    args = ap.parse_args(argv)
    names = list(CONFIGS) if args.configs == "all" else [c for c in args.configs.split(",") if c]
    modes = [m for m in args.modes.split(",") if m]
    set_names = [s for s in args.sets.split(",") if s]
    ranks = [r for r in args.rank_by.split(",") if r]
    stages = [s for s in args.stages.split(",") if s]
    unknown = ([c for c in names if c not in CONFIGS] + [m for m in modes if m not in MODES]
               + [s for s in set_names if s not in SETS] + [s for s in stages if s not in STAGES]
               + [r for r in ranks if r not in ("document", "chunk")])
    if unknown:
        ap.error(f"unknown: {', '.join(unknown)}")

    root = ensure_corpus().resolve()
    questions = {name: load_questions(SETS[name]) for name in SETS}
    problems = [p for name in SETS for p in check_questions(questions[name], root)]
    off = load_offcorpus()
    if problems:
        print("question file problems:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    pages = all_pages(root)
    subset = subset_pages([q for qs in questions.values() for q in qs], pages)
    print(", ".join(f"{len(qs)} {n}" for n, qs in questions.items())
          + f" questions verified, {len(off)} off-corpus; corpus {len(pages)} pages, "
            f"subset {len(subset)}", flush=True)
    if args.check:
        return 0
    questions = {n: questions[n] for n in set_names}

    rows: list[tuple[str, str, str, Scores]] = []
    out: dict[str, Any] = {"questions": {n: len(q) for n, q in questions.items()},
                           "off_corpus": len(off), "corpus_pages": len(pages),
                           "subset_pages": len(subset), "runs": {}, "stages": {}}
    sim = None
    try:
        for name in names:
            cfg = CONFIGS[name]
            print(f"[{name}] ingesting {len(subset) if cfg.subset else len(pages)} pages ...",
                  flush=True)
            index, build = open_index(cfg, root, subset if cfg.subset else pages, args.fresh)
            print(f"[{name}] {build.chunks} chunks; ingest {build.ingest_s:.1f} s, "
                  f"{build.embedded} embedded this run", flush=True)
            run: dict[str, Any] = {"settings": cfg.describe, "pages": build.pages,
                                   "chunks": build.chunks, "ingest_s": round(build.ingest_s, 2),
                                   "embedded": build.embedded, "full_build": build.full_build,
                                   "results": {}}
            out["runs"][name] = run
            with index:
                # Quality: every question, its embedding from a cache shared by all modes,
                # stages and runs (the questions' embeddings do not change between indexes of
                # one embedder). Latency: a fixed sample per set, cache off, so each search
                # pays for embedding its question as a user's would.
                qcache = EmbeddingCache(CACHE / f"eval-queries-{cfg.embedder}.sqlite")
                for qset, qs in questions.items():
                    sample = qs[::max(1, len(qs) // args.latency_sample)]
                    for mode, rank_by in itertools.product(modes, ranks):
                        label = mode if rank_by == "document" else f"{mode}, chunk order"
                        index.embedder.cache = None
                        _, times = run_search(index, sample, mode, rank_by=rank_by)
                        index.embedder.cache = qcache
                        ranked, _ = run_search(index, qs, mode, rank_by=rank_by)
                        s = score(qs, ranked, times)
                        rows.append((name, qset, label, s))
                        run["results"][f"{qset}/{label}"] = s.row()
                        print(f"[{name}] {qset}/{label}: R@5 {s.page[5]:.2f}, MRR {s.mrr:.2f}, "
                              f"p50 {s.p50_ms:.0f} ms", flush=True)
                if name != args.stage_config:
                    continue
                st = out["stages"]
                index.embedder.cache = qcache
                ref: dict[str, Any] = {}
                for qset, qs in questions.items():
                    ref[qset] = score(qs, *run_search(index, qs, "hybrid")).row()
                st["hybrid_cached_query"] = ref
                print(f"[{name}] hybrid, cached query embeddings: {json.dumps(ref)}", flush=True)
                if "tune" in stages:
                    print(f"[{name}] fusion tuning ...", flush=True)
                    lists = {n: gather_lists(index, qs) for n, qs in questions.items()}
                    st["tune"] = tune(questions, lists)
                    print(json.dumps(st["tune"], indent=1), flush=True)
                    st["tune_ranking"] = tune_ranking(questions, lists)
                    print(json.dumps(st["tune_ranking"], indent=1), flush=True)
                if "calibrate" in stages:
                    print(f"[{name}] calibration ...", flush=True)
                    st["calibrate"] = calibrate(
                        index, [q for qs in questions.values() for q in qs], off)
                    print(json.dumps(st["calibrate"], indent=1), flush=True)
                if "cost" in stages:
                    print(f"[{name}] context embedding cost ...", flush=True)
                    st["context_cost"] = stage_context_cost(index)
                    print(json.dumps(st["context_cost"]), flush=True)
                    print(f"[{name}] document-order cost ...", flush=True)
                    st["ranking_cost"] = stage_ranking_cost(
                        index, [q for qs in questions.values() for q in qs])
                    print(json.dumps(st["ranking_cost"]), flush=True)
                if "ablate" in stages:
                    from eval_ablations import stage_ablations

                    print(f"[{name}] query-side variants ...", flush=True)
                    st["ablate"] = stage_ablations(index, questions, page_of_source, score,
                                                   STOPWORDS)
                    for label, res in st["ablate"].items():
                        print(f"[{name}] {label}: " + ", ".join(
                            f"{q} R@5 {v['r5']:.3f} MRR {v['mrr']:.3f}" for q, v in res.items()),
                            flush=True)
                if "rerank" in stages or "expand" in stages:
                    from parallelrag.sim import SimConfig, SimServer

                    sim = SimServer(SimConfig(latency=0.0)).start()
                sim_url = sim.url if sim is not None else None
                if "rerank" in stages:
                    for spec in [s for s in args.rerank.split(",") if s]:
                        print(f"[{name}] rerank {spec} ...", flush=True)
                        st[f"rerank:{spec}"] = stage_rerank(index, questions, spec, sim_url,
                                                            args.rerank_depth)
                        print(json.dumps(st[f"rerank:{spec}"]), flush=True)
                if "expand" in stages:
                    for how in ("multi", "hyde"):
                        print(f"[{name}] expand {how} ...", flush=True)
                        st[f"expand:{how}"] = stage_expand(index, questions, str(sim_url), how)
                        print(json.dumps(st[f"expand:{how}"]), flush=True)
    finally:
        if sim is not None:
            sim.stop()

    print()
    print(table(rows))
    if args.misses:
        by_id = {q.id: q for qs in questions.values() for q in qs}
        for name, qset, mode, s in rows:
            for qid in s.misses5:
                print(f"miss@5 {name}/{qset}/{mode} {qid}: {by_id[qid].question}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"\nresults: {os.path.relpath(args.json)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
