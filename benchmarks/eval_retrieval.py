"""Retrieval quality of ``parallelrag.pipeline.Index`` on a real corpus: the Python 3.11 docs.

Questions with known answers (``benchmarks/eval_questions.json``: the page(s) that answer each
one and phrases of those pages that hold the answer) are run against indexes built with the real
pipeline (HTML loader → splitter → local embedder → embedded store), in the three search modes
(``vector``, ``keyword`` = BM25, ``hybrid`` = RRF of both). Reported per index and mode:

* **page R@k** (k = 1, 5, 10): the share of questions with a hit from the expected page among the
  top k chunks;
* **strict R@k**: ... a hit from the expected page whose *text contains an answer phrase*
  (whitespace-normalized), i.e. the chunk an LLM would need;
* **MRR**: mean reciprocal rank of the first expected-page hit within the top 10 (0 if none);
* **para R@5**: page R@5 on the questions marked ``paraphrased`` only (few shared terms).

Indexes (under ``benchmarks/.cache/eval-*``, reused across runs: ingest is incremental and the
embedding cache lives in each index directory; ``--fresh`` rebuilds them):

* ``wordllama``: all 530 pages, default splitter (1500/150 characters);
* ``wordllama-subset``: the 150-page subset below, same settings (to compare with minilm);
* ``minilm-200``: all-MiniLM-L6-v2 on the subset, default splitter (200/20 model tokens);
* ``minilm-128``: the same with 128/13 tokens per chunk (opt-in: ``--configs all``).

The subset is every page some question expects plus deterministic distractors (seeded sample of
the other pages) up to 150 pages: MiniLM on two CPU cores embeds only ~20-30 chunks/s of
128-200 tokens (~100/s is for short sentences).

Run: ``.venv/bin/python benchmarks/eval_retrieval.py`` (``--configs all`` or
``--configs wordllama,minilm-128`` to choose; ``--check`` only verifies the question file;
``--misses`` lists the questions each run missed at 10; ``--fresh`` rebuilds the indexes).
The corpus comes from Debian's ``python3.11-doc`` (``apt-get download`` + ``dpkg-deb -x`` into
``benchmarks/.cache``, shared with ``benchmarks/corpus.py``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parallelrag.loaders import load_file
from parallelrag.pipeline import Index, IngestProgress
from parallelrag.splitters import RecursiveSplitter
from parallelrag.store import Hit

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
PACKAGE = "python3.11-doc"
DOC_ROOT = CACHE / "python3.11-doc-root" / "usr/share/doc/python3.11/html"
QUESTIONS = HERE / "eval_questions.json"
MODES = ("vector", "keyword", "hybrid")
KS = (1, 5, 10)
SUBSET_PAGES = 150
SUBSET_SEED = 0

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


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Question(q["id"], q["question"], tuple(q["pages"]), tuple(q["answers"]), q["kind"],
                     bool(q["paraphrased"])) for q in data["questions"]]


def check_questions(questions: Sequence[Question], root: Path) -> list[str]:
    """Problems with the question file: unknown pages, pages holding none of the answer phrases,
    phrases found in none of the pages.

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
                 size: int = SUBSET_PAGES, seed: int = SUBSET_SEED) -> list[str]:
    """The expected pages plus a seeded sample of the others, ``size`` pages in all, sorted."""
    expected = sorted({p for q in questions for p in q.pages})
    rest = [p for p in pages if p not in set(expected)]
    extra = random.Random(seed).sample(rest, max(0, min(len(rest), size - len(expected))))
    return sorted(expected + extra)


# --------------------------------------------------------------------------------------- indexes
@dataclass(frozen=True)
class Config:
    name: str
    embedder: str
    splitter: Callable[[], Any] | None  # None: the index's default splitter for the embedder
    subset: bool
    describe: str


CONFIGS: dict[str, Config] = {c.name: c for c in (
    Config("wordllama", "wordllama", None, False, "wordllama 256-d, 1500/150 chars, all pages"),
    Config("wordllama-subset", "wordllama", None, True,
           "wordllama 256-d, 1500/150 chars, subset"),
    Config("minilm-200", "minilm",
           lambda: RecursiveSplitter(chunk_size=200, chunk_overlap=20, length="minilm"), True,
           "MiniLM-L6, 200/20 tokens, subset"),
    Config("minilm-128", "minilm", None, True,
           "MiniLM-L6, 128/16 tokens (the index's default), subset"),
)}
#: minilm-200 is opt-in (``--configs all``): a fresh build takes ~8 min on two busy cores.
DEFAULT_CONFIGS = ("wordllama", "wordllama-subset", "minilm-128")


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
    index = Index.open(path, embedder=cfg.embedder,
                       splitter=cfg.splitter() if cfg.splitter is not None else None)
    last = [0.0]

    def progress(p: IngestProgress) -> None:  # a line every 15 s on long (minilm) builds
        if p.elapsed_s - last[0] >= 15:
            last[0] = p.elapsed_s
            print(f"[{cfg.name}]   {p.elapsed_s:.0f} s: {p.documents_done} pages, "
                  f"{p.embedded} chunks embedded ({p.embeddings_per_s:.0f}/s)", flush=True)

    was_empty = not index.store.documents()
    t0 = time.perf_counter()
    if cfg.subset:
        report = index.ingest([root / p for p in pages], progress=progress)
    else:
        report = index.ingest([root], include=["*.html"], progress=progress)
    ingest_s = time.perf_counter() - t0
    if report.failed:
        raise SystemExit(f"{cfg.name}: ingest failed for {report.failed[:3]}")
    # Keep exactly the wanted pages (the subset changes when questions change).
    wanted = {str(root / p) for p in pages}
    for doc in index.store.documents():
        if doc.source.split("#", 1)[0] not in wanted:
            index.remove(doc.source)
    stats = index.stats()
    meta_path = path / "eval_build.json"
    full: dict[str, Any] = {}
    if meta_path.exists():
        full = json.loads(meta_path.read_text(encoding="utf-8"))
    if was_empty:  # a build from scratch: its timing is the ingest cost of this corpus
        full = {"embedded": report.embedded, "chunks_written": report.chunks,
                "wall_s": round(report.wall_s, 2), "stages": report.stages,
                "chunks_per_s": round(report.embedded / max(report.wall_s, 1e-9), 1)}
        meta_path.write_text(json.dumps(full, indent=1), encoding="utf-8")
    chunks = int(stats.get("chunks", 0))
    # Queries must pay for their embedding: the index's embedding cache would answer repeated
    # questions from disk on later runs and make vector search look free.
    index.embedder.cache = None
    return index, Build(pages=len(pages), chunks=chunks, ingest_s=ingest_s,
                        embedded=report.embedded, full_build=full)


# ----------------------------------------------------------------------------------- evaluation
@dataclass
class Scores:
    page: dict[int, float]
    strict: dict[int, float]
    mrr: float
    para_at5: float
    ms_per_query: float
    misses: list[str]  # ids of questions with no expected-page hit in the top 10


def page_of(hit: Hit, root: Path) -> str:
    src = hit.source.split("#", 1)[0]
    try:
        return Path(src).relative_to(root).as_posix()
    except ValueError:
        return src


def evaluate(index: Index, questions: Sequence[Question], root: Path, mode: str) -> Scores:
    kmax = max(KS)
    page_hits = {k: 0 for k in KS}
    strict_hits = {k: 0 for k in KS}
    rr = 0.0
    para_total = para_hit = 0
    misses: list[str] = []
    index.search("warm-up query", k=kmax, mode=mode)  # model, vector matrix, FTS pages
    t0 = time.perf_counter()
    results = [index.search(q.question, k=kmax, mode=mode) for q in questions]
    elapsed = time.perf_counter() - t0
    for q, hits in zip(questions, results, strict=True):
        answers = [norm(a) for a in q.answers]
        first_page: int | None = None
        first_strict: int | None = None
        for rank, hit in enumerate(hits, 1):
            if page_of(hit, root) in q.pages:
                if first_page is None:
                    first_page = rank
                if first_strict is None and any(a in norm(hit.text) for a in answers):
                    first_strict = rank
        for k in KS:
            page_hits[k] += first_page is not None and first_page <= k
            strict_hits[k] += first_strict is not None and first_strict <= k
        rr += 1.0 / first_page if first_page is not None else 0.0
        if first_page is None:
            misses.append(q.id)
        if q.paraphrased:
            para_total += 1
            para_hit += first_page is not None and first_page <= 5
    n = len(questions)
    return Scores(
        page={k: page_hits[k] / n for k in KS}, strict={k: strict_hits[k] / n for k in KS},
        mrr=rr / n, para_at5=para_hit / para_total if para_total else 0.0,
        ms_per_query=1000 * elapsed / n, misses=misses,
    )


# --------------------------------------------------------------------------------------- report
def table(rows: list[tuple[str, str, Scores]]) -> str:
    head = ("| index | mode | page R@1 | R@5 | R@10 | strict R@1 | R@5 | R@10 | MRR | para R@5 "
            "| ms/query |")
    lines = [head, "|" + "---|" * 11]
    for name, mode, s in rows:
        lines.append(
            f"| {name} | {mode} | {s.page[1]:.2f} | {s.page[5]:.2f} | {s.page[10]:.2f} "
            f"| {s.strict[1]:.2f} | {s.strict[5]:.2f} | {s.strict[10]:.2f} | {s.mrr:.2f} "
            f"| {s.para_at5:.2f} | {s.ms_per_query:.1f} |"
        )
    return "\n".join(lines)


def build_table(builds: dict[str, tuple[Config, Build]]) -> str:
    lines = ["| index | settings | pages | chunks | build from scratch | chunks/s | this run |",
             "|---|---|---|---|---|---|---|"]
    for name, (cfg, b) in builds.items():
        fb = b.full_build
        full = f"{fb['embedded']} embedded in {fb['wall_s']:.1f} s" if fb else "n/a"
        # (n/a: the index predates this script's record; rerun with --fresh to time a build)
        rate = f"{fb['chunks_per_s']:.0f}" if fb else "n/a"
        lines.append(f"| {name} | {cfg.describe} | {b.pages} | {b.chunks} | {full} | {rate} "
                     f"| {b.ingest_s:.1f} s, {b.embedded} embedded |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                    help=f"comma-separated, from {', '.join(CONFIGS)}, or 'all' "
                         f"(default: {','.join(DEFAULT_CONFIGS)})")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--questions", type=Path, default=QUESTIONS)
    ap.add_argument("--fresh", action="store_true", help="delete and rebuild the indexes")
    ap.add_argument("--check", action="store_true", help="only verify the question file")
    ap.add_argument("--misses", action="store_true", help="list questions missed at 10")
    ap.add_argument("--json", type=Path, default=CACHE / "eval-results.json",
                    help="where to write the results as JSON")
    args = ap.parse_args(argv)
    names = list(CONFIGS) if args.configs == "all" else [c for c in args.configs.split(",") if c]
    modes = [m for m in args.modes.split(",") if m]
    unknown = [c for c in names if c not in CONFIGS] + [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown: {', '.join(unknown)}")

    root = ensure_corpus().resolve()
    questions = load_questions(args.questions)
    problems = check_questions(questions, root)
    if problems:
        print("question file problems:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    pages = all_pages(root)
    subset = subset_pages(questions, pages)
    n_para = sum(q.paraphrased for q in questions)
    print(f"{len(questions)} questions ({n_para} paraphrased) verified against "
          f"{len({p for q in questions for p in q.pages})} pages; corpus {len(pages)} pages, "
          f"subset {len(subset)}", flush=True)
    if args.check:
        return 0

    rows: list[tuple[str, str, Scores]] = []
    builds: dict[str, tuple[Config, Build]] = {}
    out: dict[str, Any] = {"questions": len(questions), "paraphrased": n_para,
                           "corpus_pages": len(pages), "subset_pages": len(subset), "runs": {}}
    for name in names:
        cfg = CONFIGS[name]
        print(f"[{name}] ingesting {len(subset) if cfg.subset else len(pages)} pages ...",
              flush=True)
        index, build = open_index(cfg, root, subset if cfg.subset else pages, args.fresh)
        builds[name] = (cfg, build)
        print(f"[{name}] {build.chunks} chunks; ingest {build.ingest_s:.1f} s, "
              f"{build.embedded} embedded this run", flush=True)
        out["runs"][name] = {"settings": cfg.describe, "pages": build.pages,
                             "chunks": build.chunks, "ingest_s": round(build.ingest_s, 2),
                             "embedded": build.embedded, "full_build": build.full_build,
                             "modes": {}}
        with index:
            for mode in modes:
                s = evaluate(index, questions, root, mode)
                rows.append((name, mode, s))
                out["runs"][name]["modes"][mode] = {
                    "page": s.page, "strict": s.strict, "mrr": round(s.mrr, 4),
                    "para_at5": round(s.para_at5, 4), "ms_per_query": round(s.ms_per_query, 2),
                    "misses": s.misses,
                }
                print(f"[{name}] {mode}: page R@5 {s.page[5]:.2f}, strict R@5 "
                      f"{s.strict[5]:.2f}, MRR {s.mrr:.2f}", flush=True)

    print("\n" + build_table(builds) + "\n")
    print(table(rows))
    if args.misses:
        by_id = {q.id: q for q in questions}
        for name, mode, s in rows:
            for qid in s.misses:
                print(f"miss {name}/{mode} {qid}: {by_id[qid].question}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"\nresults: {os.path.relpath(args.json)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
