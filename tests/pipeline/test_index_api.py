"""Issue 14: shaping answers (prompt, system, where=), the async twins, the store seam
(``store=`` and ``postgresql://`` URLs) and the chunk context hook."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parallelrag import EmbeddingClient
from parallelrag.documents import Document
from parallelrag.errors import ConfigError
from parallelrag.llm import LlmClient
from parallelrag.pipeline import DEFAULT_SYSTEM, Index
from parallelrag.sim import SimServer
from parallelrag.store import EmbeddedStore
from parallelrag.store.base import embed_text, text_key

DOCS = [
    Document("The red fox lives in the forest and hunts mice.", id="fox",
             metadata={"kind": "animal", "title": "Foxes"}),
    Document("The red planet Mars has two small moons.", id="mars",
             metadata={"kind": "planet", "title": "Mars"}),
    Document("Red wine is made from dark grapes.", id="wine",
             metadata={"kind": "drink", "title": "Wine"}),
]


@pytest.fixture(scope="module")
def wordllama() -> EmbeddingClient:
    return EmbeddingClient.local("wordllama")


@pytest.fixture
def index(tmp_path: Path, wordllama: EmbeddingClient) -> Any:
    idx = Index.open(tmp_path / "idx", embedder=wordllama)
    idx.ingest(DOCS)
    yield idx
    idx.close()


def test_every_public_sync_method_has_an_async_twin() -> None:
    public = {n for n, v in vars(Index).items() if not n.startswith("_")
              and (inspect.isfunction(v) or isinstance(v, classmethod))}
    sync = {n for n in public if not n.startswith("a") or f"a{n}" in public}
    sync -= {"config", "document_key", "file_key", "under_roots"}  # pure, no I/O
    missing = sorted(n for n in sync if f"a{n}" not in public)
    assert not missing, f"sync methods without an async twin: {missing}"
    for n in sync:
        twin = getattr(Index, f"a{n}")
        assert inspect.iscoroutinefunction(twin) or n.startswith("stream"), n
    assert {"answer", "answer_many", "stream_answer", "search", "ingest", "remove",
            "stats", "open", "close"} <= sync


def test_where_filters_search_and_answers(index: Index, sim: SimServer) -> None:
    assert {h.source for h in index.search("red", k=5, where={"kind": "planet"})} == {"mars"}
    ans = index.answer("red", k=5, where={"kind": "animal"})
    assert ans.extractive and [h.source for h in ans.hits] == ["fox"]
    llm = LlmClient.openai("m", base_url=sim.url, api_key="sk-x")
    many = index.answer_many(["ECHO: a [1]", "ECHO: b [1]"], llm=llm, k=3,
                             where={"kind": "drink"})
    assert [a.text for a in many] == [" a [1]", " b [1]"]
    assert all([h.source for h in a.hits] == ["wine"] for a in many)
    assert many[0].citations[0].source == "wine"


def test_prompt_template_and_system_prompt(tmp_path: Path, wordllama: EmbeddingClient,
                                           sim: SimServer) -> None:
    idx = Index.open(tmp_path / "idx", embedder=wordllama,
                     prompt="ECHO:Q={question} {unrelated} S={sources}", system="Be brief.")
    idx.ingest(DOCS)
    llm = LlmClient.openai("m", base_url=sim.url, api_key="sk-x")
    ans = idx.answer("moons", llm=llm, k=1, where={"kind": "planet"})
    assert ans.text == ("Q=moons {unrelated} S=[1] (source: mars)\n"
                        "The red planet Mars has two small moons.")
    msgs = idx._messages("moons", ans.hits, None, None)
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    # per-call prompt= / system= win over the index's
    per_call = idx.answer("moons", llm=llm, k=1, prompt="ECHO:{question}!")
    assert per_call.text == "moons!"
    default = idx._messages("q", ans.hits, None, DEFAULT_SYSTEM)
    assert default[0]["content"].startswith(DEFAULT_SYSTEM)
    idx.close()
    plain = Index.open(tmp_path / "idx")
    msgs = plain._messages("q", ans.hits, None, None)
    assert msgs[0]["content"].startswith(DEFAULT_SYSTEM) and "[1] (source: mars)" in msgs[0][
        "content"] and msgs[1] == {"role": "user", "content": "q"}
    plain.close()


async def test_async_answers_and_streams(index: Index, sim: SimServer) -> None:
    llm = LlmClient.openai("m", base_url=sim.url, api_key="sk-x")
    ans = await index.aanswer("ECHO: fox [1]", llm=llm, k=1, where={"kind": "animal"})
    assert ans.text == " fox [1]" and ans.citations[0].source == "fox"
    many = await index.aanswer_many(["ECHO: one", "ECHO: two", "ECHO: three"], llm=llm, k=1)
    assert [a.text for a in many] == [" one", " two", " three"]
    stream = index.astream_answer("Where does the fox live?", llm=llm, k=2,
                                  where={"kind": "animal"})
    deltas = [d async for d in stream]
    assert len(deltas) > 1 and stream.answer is not None
    assert stream.answer.text == "".join(deltas) and [h.source for h in stream.hits] == ["fox"]
    extractive = index.astream_answer("planet moons", llm=None, k=1)
    text = "".join([d async for d in extractive])
    assert "Mars" in text and extractive.answer is not None and extractive.answer.extractive
    s = index.stream_answer("ECHO: sync [1]", llm=llm, k=1, where={"kind": "drink"})
    assert "".join(s) == " sync [1]" and s.answer is not None
    assert s.answer.citations[0].source == "wine"
    assert (await index.astats())["documents"] == 3
    assert await index.aremove("wine") is True
    assert [h.source for h in await index.asearch("red", k=5, where={"kind": "drink"})] == []


def test_chunk_context_is_embedded_indexed_and_returned(tmp_path: Path,
                                                         wordllama: EmbeddingClient) -> None:
    index = Index.open(tmp_path / "ctx", embedder=wordllama, chunk_context=True)
    index.ingest(DOCS)
    hit = index.search("Foxes", k=1, mode="keyword")[0]  # the title is only in the context
    assert hit.source == "fox" and "Foxes" not in hit.text and hit.context == "Foxes"
    chunk_like = type("C", (), {"context": hit.context, "text": hit.text})()
    assert embed_text(chunk_like) == "Foxes\n\n" + hit.text
    stored = index.store.vectors_by_key([text_key(embed_text(chunk_like))])
    assert len(stored) == 1
    np.testing.assert_allclose(next(iter(stored.values())),
                               index.embedder.embed("Foxes\n\n" + hit.text), atol=1e-5)


def test_store_seam_any_vector_store(tmp_path: Path, wordllama: EmbeddingClient) -> None:
    store = EmbeddedStore.open(tmp_path / "custom", dimension=wordllama.dimension,
                               model_id=f"{wordllama.provider}:{wordllama.model}")
    idx = Index.open("my-index", store=store, embedder=wordllama)
    assert idx.ingest(DOCS).added == 3
    assert store.load_config() is not None
    assert store.load_config()["embedder"] == wordllama.spec  # type: ignore[index]
    assert idx.search("moons", k=1)[0].source == "mars"
    assert "my-index" in repr(idx)
    # a reopen without embedder= uses the one saved in the store
    again = Index.open("my-index", store=store)
    assert again.embedder.spec == wordllama.spec
    assert again.ingest(DOCS).unchanged == 3
    with pytest.raises(ConfigError, match="must implement VectorStore"):
        Index.open(store=object())  # type: ignore[arg-type]
    again.close()


def test_postgres_urls_dispatch_to_postgres_store(
    tmp_path: Path, wordllama: EmbeddingClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from parallelrag.store import postgres

    calls: list[tuple[str, int, str, bool]] = []

    def fake_open(url: str, *, dimension: int, model_id: str, create: bool = True,
                  **kw: Any) -> EmbeddedStore:
        calls.append((url, dimension, model_id, create))
        return EmbeddedStore.open(tmp_path / "pg-stand-in", dimension=dimension,
                                  model_id=model_id, create=create)

    monkeypatch.setattr(postgres.PostgresStore, "open", staticmethod(fake_open))
    for url in ("postgresql://u@127.0.0.1:1/db?index=t", "postgres://127.0.0.1/db"):
        idx = Index.open(url, embedder=wordllama)
        assert idx.root is None and idx.path is None
        idx.close()
    assert [c[0] for c in calls] == ["postgresql://u@127.0.0.1:1/db?index=t",
                                     "postgres://127.0.0.1/db"]
    assert calls[0][1:] == (wordllama.dimension, f"{wordllama.provider}:{wordllama.model}", True)


def test_opening_a_saved_index_sends_no_probe_request(tmp_path: Path,
                                                      make_sim: Callable[..., SimServer]) -> None:
    """stats/remove on an index whose provider is down (or whose key is wrong) still work: the
    vector size comes from the saved settings, not from a probe request."""
    srv = make_sim(latency=0.0)
    emb = EmbeddingClient.openai("probe-model", base_url=srv.url, api_key="sk-x")  # no dimensions=
    index = Index.open(tmp_path / "idx", embedder=emb)
    index.ingest([("some text about otters", {"id": "o"})])
    index.close()
    spec = emb.spec
    srv.stop()  # the provider is gone
    again = Index.open(tmp_path / "idx", embedder=EmbeddingClient.from_url(spec, api_key="sk-x"))
    assert again.stats()["documents"] == 1
    assert again.remove("o") is True
    again.close()
