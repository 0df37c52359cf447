"""The main job: ingest → store → search → answer, incremental and crash-safe (issue 6)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from parallelrag import EmbeddingClient
from parallelrag.pipeline import Index
from parallelrag.sim import SimServer

FACTS = {
    "lighthouse": "The lighthouse keeper's secret code is AZURE-PELICAN-42.",
    "volcano": "Mount Quillibrand erupted in the year 1783 according to the archive.",
    "recipe": "Grandmother's zucchini bread needs exactly seventeen walnuts.",
}

MINIMAL_PDF_TEXT = "Quarterly report mentions the flamingo budget"


def _pdf_bytes(text: str) -> bytes:
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    w = PdfWriter()
    page = w.add_blank_page(width=300, height=200)
    font = DictionaryObject({
        NameObject("/Type"): NameObject("/Font"),
        NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
    })
    page[NameObject("/Resources")] = DictionaryObject({
        NameObject("/Font"): DictionaryObject({NameObject("/F1"): w._add_object(font)})
    })
    stream = DecodedStreamObject()
    stream.set_data(f"BT /F1 12 Tf 20 100 Td ({text}) Tj ET".encode())
    page[NameObject("/Contents")] = w._add_object(stream)
    import io

    buf = io.BytesIO()
    w.write(buf)
    return buf.getvalue()


def make_corpus(root: Path) -> dict[str, str]:
    """A corpus with every loader type and every kind of bad file. Returns expected skips."""
    (root / "a" / "b").mkdir(parents=True)
    (root / "notes").mkdir()
    filler = " ".join(f"filler sentence number {i} about nothing in particular." for i in range(40))
    (root / "a" / "lighthouse.txt").write_text(f"{filler}\n\n{FACTS['lighthouse']}\n\n{filler}")
    (root / "a" / "b" / "volcano.md").write_text(
        f"# Geology\n\n## Volcanoes\n\n{FACTS['volcano']}\n\n{filler}\n")
    (root / "notes" / "recipe.rst").write_text(f"Recipes\n=======\n\n{FACTS['recipe']}\n")
    (root / "page.html").write_text(
        "<html><head><title>Birds</title><script>var x=1;</script></head><body>"
        "<h1>Birds</h1><p>The albatross has the longest wingspan of any bird.</p></body></html>")
    (root / "data.jsonl").write_text(
        orjson.dumps({"text": "The capybara is the largest rodent.", "id": 1}).decode() + "\n"
        + orjson.dumps({"text": "Axolotls regrow their limbs.", "id": 2}).decode() + "\n")
    (root / "report.pdf").write_bytes(_pdf_bytes(MINIMAL_PDF_TEXT))
    (root / "blob.bin").write_bytes(bytes(range(256)) * 40)
    (root / "bad.txt").write_bytes(bytes(random.Random(1).randrange(128, 256) for _ in range(3000))
                                   + b"\x00\x81\x8d\x8f\x90\x9d" * 50)
    (root / "empty.txt").write_text("")
    os.symlink(root / "a", root / "a" / "b" / "loop")
    return {
        str(root / "blob.bin"): "binary",
        str(root / "bad.txt"): "",
        str(root / "empty.txt"): "empty",
    }


@pytest.fixture(scope="module")
def wordllama() -> EmbeddingClient:
    return EmbeddingClient.local("wordllama")


def test_ingest_corpus_reports_skips_and_finds_facts(tmp_path: Path,
                                                      wordllama: EmbeddingClient) -> None:
    corpus = tmp_path / "corpus"
    expected_skips = make_corpus(corpus)
    index = Index.open(tmp_path / "idx", embedder=wordllama)
    report = index.ingest([corpus], text_field="text")
    skipped = dict(report.skipped)
    for path in expected_skips:
        assert path in skipped, (path, report.skipped)
    loop_skips = [p for p, r in report.skipped if "loop" in r or "duplicate" in r]
    assert loop_skips, report.skipped
    assert len(report.skipped) == len(expected_skips) + len(loop_skips), report.skipped
    assert not report.failed
    assert report.added == 7  # txt, md, rst, html, pdf, 2 jsonl records
    sources = {d.source for d in index.store.documents()}
    assert str(corpus / "data.jsonl") + "#0" in sources or any("#" in s for s in sources)
    for key, fact in FACTS.items():
        hits = index.search(fact.split(" is ")[0] if " is " in fact else fact, k=3)
        assert any(fact in h.text for h in hits), (key, [h.text[:60] for h in hits])
    hits = index.search("AZURE-PELICAN-42", k=1, mode="keyword")
    assert hits and "AZURE-PELICAN-42" in hits[0].text
    pdf_hits = index.search("flamingo budget", k=2, mode="keyword")
    assert pdf_hits and pdf_hits[0].source.endswith("report.pdf")
    h = hits[0]
    doc_text = (corpus / "a" / "lighthouse.txt").read_text()
    assert doc_text[h.start:h.end] == h.text
    index.close()


def _sim_embedder(srv: SimServer, **kw: Any) -> EmbeddingClient:
    return EmbeddingClient.openai("idx-model", base_url=srv.url, api_key="sk-x", dimensions=32,
                                  **kw)


def test_incremental_reingest_and_prune(tmp_path: Path, sim: SimServer) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(20):
        (corpus / f"doc{i}.txt").write_text(f"Document {i}. " + "words and more words. " * 200)
    index = Index.open(tmp_path / "idx", embedder=_sim_embedder(sim))
    first = index.ingest([corpus])
    assert first.added == 20 and first.chunks > 20
    sent = sim.stats()["embedding_inputs"]
    second = index.ingest([corpus])
    assert second.unchanged == 20 and second.added == second.updated == 0
    assert sim.stats()["embedding_inputs"] == sent  # nothing re-embedded
    (corpus / "doc3.txt").write_text("Document 3 changed entirely: the harbour opens at dawn. "
                                     * 50)
    third = index.ingest([corpus])
    assert third.updated == 1 and third.unchanged == 19
    new_inputs = sim.stats()["embedding_inputs"] - sent
    assert 0 < new_inputs <= third.chunks
    # the sim's vectors are hashes of the text (no meaning): the new words are found by keyword
    hits = index.search("harbour opens at dawn", k=3, mode="keyword")
    assert hits[0].source.endswith("doc3.txt")
    (corpus / "doc5.txt").unlink()
    kept = index.ingest([corpus])
    assert kept.removed == 0 and len(index.store.documents()) == 20
    pruned = index.ingest([corpus], prune=True)
    assert pruned.removed == 1 and len(index.store.documents()) == 19
    index.close()


def test_faults_and_rate_limits_5000_chunks_nothing_lost(
    tmp_path: Path, make_sim: Callable[..., SimServer]
) -> None:
    srv = make_sim(latency=0.01, rpm=20_000, tpm=3_000_000, rate_window_s=1.0, fault_500=0.03,
                   fault_503=0.02, fault_reset=0.01, seed=3)
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(250):
        paras = [f"File {i} paragraph {j}: unique token t{i}x{j}." for j in range(20)]
        (corpus / f"f{i}.txt").write_text("\n\n".join(paras))
    from parallelrag.splitters import RecursiveSplitter

    index = Index.open(tmp_path / "idx", embedder=_sim_embedder(srv, batch_size=64),
                       splitter=RecursiveSplitter(chunk_size=60, chunk_overlap=0))
    report = index.ingest([corpus])
    assert not report.failed, report.failed[:3]
    assert report.chunks == 5000
    assert index.store.stats()["chunks"] == 5000
    assert sum(srv.stats()["faults"].values()) > 0
    hits = index.search("t17x4", k=1, mode="keyword")
    assert hits and "t17x4" in hits[0].text
    index.close()


def _count_rows(index_dir: Path) -> tuple[list[str], int]:
    con = sqlite3.connect(index_dir / "store.sqlite")
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "documents" in tables and "chunks" in tables, tables
        docs = [r[0] for r in con.execute("SELECT source FROM documents")]
        n = con.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return docs, int(n)
    finally:
        con.close()


def test_kill_9_mid_ingest_then_resume_is_exactly_once(
    tmp_path: Path, make_sim: Callable[..., SimServer]
) -> None:
    srv = make_sim(latency=0.03)
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(120):
        (corpus / f"d{i:03d}.txt").write_text(f"Doc {i}. " + f"sentence {i} goes on. " * 150)
    idx = tmp_path / "idx"
    cmd = [sys.executable, "-m", "parallelrag", "ingest", str(corpus), "--index", str(idx),
           "--embed", f"openai://kill-model?base_url={srv.url}&dimensions=16&batch_size=8",
           "--json"]
    env = {**os.environ, "OPENAI_API_KEY": "sk-kill-test"}
    rng = random.Random(5)
    for _ in range(3):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 4.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    report = orjson.loads(done.stdout)
    docs, n_chunks = _count_rows(idx)
    # each exactly once, keyed by its path relative to the index's parent directory
    assert sorted(docs) == sorted(p.relative_to(tmp_path).as_posix() for p in corpus.glob("*.txt"))
    assert len(docs) == len(set(docs)) == 120
    index = Index.open(idx)
    per_doc = {d.source: d.n_chunks for d in index.store.documents()}
    assert sum(per_doc.values()) == n_chunks == index.store.stats()["chunks"]
    assert report["added"] + report["unchanged"] + report["updated"] == 120
    hits = index.search("sentence 77 goes on", k=50, mode="keyword")
    assert hits and all(h.text for h in hits)
    index.close()


def test_answer_with_sim_llm_citations_and_stream(tmp_path: Path, sim: SimServer,
                                                  wordllama: EmbeddingClient) -> None:
    from parallelrag.llm import LlmClient

    corpus = tmp_path / "c"
    make_corpus(corpus)
    index = Index.open(tmp_path / "idx", embedder=wordllama)
    index.ingest([corpus], text_field="text")
    llm = LlmClient.openai("answer-model", base_url=sim.url, api_key="sk-x")
    ans = index.answer("What is the lighthouse keeper's secret code?", llm=llm, k=3)
    assert ans.text and not ans.extractive
    assert len(ans.hits) == 3
    for c in ans.citations:
        hit = ans.hits[c.number - 1]
        assert (c.source, c.start, c.end) == (hit.source, hit.start, hit.end)
    assert ans.usage["total_tokens"] > 0
    # the sim echoes with ECHO:, so we can make it cite: the prompt's numbering must be real
    echo = index.answer("ECHO: see [1] and [2]", llm=llm, k=2)
    assert [c.number for c in echo.citations] == [1, 2]
    assert echo.citations[0].chunk_id == echo.hits[0].chunk_id
    stream = index.stream_answer("What is the lighthouse keeper's secret code?", llm=llm, k=3)
    text = "".join(stream)
    assert stream.answer is not None and stream.answer.text == text
    extractive = index.answer("secret code lighthouse", llm=None, k=2)
    assert extractive.extractive and "AZURE-PELICAN-42" in extractive.text
    assert [c.number for c in extractive.citations] == [1, 2]
    many = index.answer_many(["q one", "ECHO: [1]", "q three"], llm=llm, k=2)
    assert [a.question for a in many] == ["q one", "ECHO: [1]", "q three"]
    index.close()


def test_reopen_with_another_model_is_a_config_error(tmp_path: Path, sim: SimServer,
                                                     wordllama: EmbeddingClient) -> None:
    from parallelrag.errors import ConfigError

    Index.open(tmp_path / "idx", embedder=wordllama).close()
    with pytest.raises(ConfigError):
        Index.open(tmp_path / "idx", embedder=_sim_embedder(sim))


def _cli(*args: str, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parallelrag", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_cli_end_to_end(tmp_path: Path, sim: SimServer) -> None:
    corpus = tmp_path / "c"
    make_corpus(corpus)
    idx = str(tmp_path / "idx")
    r = _cli("ingest", str(corpus), "--index", idx, "--embed", "wordllama", "--json",
             "--text-field", "text")
    assert r.returncode == 0, r.stderr
    rep = orjson.loads(r.stdout)
    assert rep["added"] == 7 and rep["ok"] is True and len(rep["skipped"]) >= 3
    # an identifier no embedding model knows: keyword search finds it (the default hybrid
    # fusion weighs vectors 0.8, see docs/retrieval-eval.md)
    r = _cli("search", "AZURE-PELICAN-42", "--index", idx, "--json", "-k", "2",
             "--mode", "keyword")
    assert r.returncode == 0, r.stderr
    hits = orjson.loads(r.stdout)["hits"]
    assert "AZURE-PELICAN-42" in hits[0]["text"]
    r = _cli("query", "secret code of the lighthouse", "--index", idx)
    assert r.returncode == 0, r.stderr
    assert "lighthouse.txt" in r.stdout  # the output's wording is the CLI's (tests/cli)
    r = _cli("query", "ECHO: it is in [1]", "--index", idx, "--llm", "openai:cli-model",
             "--base-url", sim.url, "--json", env={"OPENAI_API_KEY": "sk-x"})
    assert r.returncode == 0, r.stderr
    out = orjson.loads(r.stdout)
    assert out["answer"].strip() == "it is in [1]" and out["citations"][0]["number"] == 1
    r = _cli("stats", "--index", idx, "--json")
    assert r.returncode == 0 and orjson.loads(r.stdout)["documents"] == 7
    r = _cli("search", "x", "--index", str(tmp_path / "missing"))
    assert r.returncode == 2
    r = _cli("ingest", str(corpus), "--index", idx, "--embed", "minilm")
    assert r.returncode == 2  # another model than the index was built with


def test_inflight_budget_bounds_text_between_split_and_write(
    tmp_path: Path, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Peak memory must not grow with the corpus: at most _INFLIGHT_CHARS of document text may be
    between the split stage and the end of its write (one larger batch goes alone). With a tiny
    budget the ingest still completes, every document lands, and the bound held throughout."""
    import parallelrag.pipeline.index as index_mod

    limit = 40_000
    monkeypatch.setattr(index_mod, "_INFLIGHT_CHARS", limit)
    seen: list[tuple[int, int]] = []
    real_acquire = index_mod._Budget.acquire

    async def acquire(self: Any, n: int) -> None:
        await real_acquire(self, n)
        seen.append((self.used - n, n))  # (held before this batch, this batch)

    monkeypatch.setattr(index_mod._Budget, "acquire", acquire)
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(60):
        (corpus / f"d{i}.txt").write_text(f"Document {i} talks about item {i}. " * 150)
    (corpus / "blank.txt").write_text("   \n\n  ")
    index = Index.open(tmp_path / "idx", embedder=_sim_embedder(sim))
    report = index.ingest([corpus])
    assert report.added == 60 and not report.failed
    assert [Path(p).name for p, _ in report.skipped] == ["blank.txt"]
    assert len(seen) > 3  # the corpus went through in several batches
    for before, n in seen:
        assert before == 0 or before + n <= limit, (before, n)
    assert any(before > 0 for before, _ in seen)  # batches really overlapped under the bound
    hits = index.search("Document 37 talks about item 37", k=1, mode="keyword")
    assert hits and hits[0].source.endswith("d37.txt")
    index.close()
