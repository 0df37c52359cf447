"""Weak-retrieval answers (parallelrag.pipeline.support) and query expansion
(parallelrag.pipeline.expand) through Index.answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from parallelrag.embeddings import EmbeddingClient
from parallelrag.errors import ConfigError
from parallelrag.llm import LlmClient
from parallelrag.pipeline import Index
from parallelrag.pipeline.expand import expanded_search, expansion_queries, rrf_merge
from parallelrag.pipeline.support import (
    UNSUPPORTED_TEXT,
    is_supported,
    min_score_for,
    support_score,
)
from parallelrag.sim import SimServer
from parallelrag.store import Hit


def _hit(i: int, vs: float | None) -> Hit:
    return Hit(chunk_id=i, text=f"t{i}", score=1.0, source=f"s{i}", start=0, end=2, index=0,
               vector_score=vs)


def test_is_supported_looks_at_the_best_vector_score() -> None:
    assert not is_supported([], None)
    assert is_supported([_hit(0, 0.1)], None)
    assert is_supported([_hit(0, 0.1), _hit(1, 0.5)], 0.4)
    assert not is_supported([_hit(0, 0.1), _hit(1, 0.3)], 0.4)
    assert is_supported([_hit(0, None)], 0.9)  # keyword hits are not judged
    assert support_score([_hit(0, None), _hit(1, 0.25)]) == 0.25
    assert support_score([]) == float("-inf")
    assert min_score_for(EmbeddingClient.local("minilm")) is not None
    assert min_score_for(EmbeddingClient.local("wordllama")) is None


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Index:
    root = tmp_path_factory.mktemp("support")
    corpus = root / "c"
    corpus.mkdir()
    (corpus / "bread.md").write_text("# Baking bread\n\nKnead the dough for ten minutes, let it "
                                     "rise for an hour, then bake at 220 degrees.\n")
    (corpus / "bikes.md").write_text("# Bicycle repair\n\nTo fix a flat tyre, remove the wheel, "
                                     "patch the inner tube and pump it up again.\n")
    idx = Index.open(root / "idx", embedder=EmbeddingClient.local("minilm"))
    idx.ingest([corpus])
    return idx


def test_answer_refuses_off_topic_questions_with_the_calibrated_threshold(
        index: Index, sim: SimServer) -> None:
    ok = index.answer("How long should I knead bread dough?", k=2)
    assert ok.supported and ok.citations and "Knead" in ok.text
    off = index.answer("Who won the football world cup in 2018?", k=2)
    assert not off.supported
    assert off.text == UNSUPPORTED_TEXT and off.citations == [] and len(off.hits) == 2
    # with an LLM: it is not asked at all
    llm = LlmClient.openai("m-support", base_url=sim.url, api_key="sk-x")
    before = sim.stats()["requests"]
    off_llm = index.answer("Who won the football world cup in 2018?", llm=llm, k=2)
    assert not off_llm.supported and sim.stats()["requests"] == before
    # min_score=None switches the check off; an explicit one replaces the calibrated one
    assert index.answer("Who won the football world cup in 2018?", k=2, min_score=None).supported
    assert not index.answer("How long should I knead bread dough?", k=2,
                            min_score=0.99).supported


def test_multi_query_and_hyde_expansion_with_the_sim_model(index: Index, sim: SimServer) -> None:
    llm = LlmClient.openai("m-expand", base_url=sim.url, api_key="sk-x")
    extra = asyncio.run(expansion_queries("How do I fix a puncture?", llm, "multi", n=3))
    assert 1 <= len(extra) <= 3 and all(extra)
    hyde = asyncio.run(expansion_queries("How do I fix a puncture?", llm, "hyde"))
    assert len(hyde) == 1
    before = sim.stats()["by_endpoint"].get("chat", 0)
    for how in ("multi", "hyde"):
        ans = index.answer("How do I fix a puncture?", llm=llm, k=1, expand=how)
        assert ans.hits and ans.hits[0].source.endswith("bikes.md")
    assert sim.stats()["by_endpoint"]["chat"] == before + 4  # one expansion + one answer each
    # the sim echoes what follows "ECHO:": one query per line, list marks stripped, deduped
    echo = asyncio.run(expansion_queries("ECHO: 1. bread\n- loaf\nbread\n\nrye", llm, "multi"))
    assert echo == ["bread", "loaf", "rye"]
    with pytest.raises(ConfigError):
        index.answer("How do I fix a puncture?", k=1, expand="multi")  # no LLM
    with pytest.raises(ConfigError):
        asyncio.run(expanded_search(index, "q", llm, k=1, how="telepathy"))


def test_rrf_merge_counts_every_list() -> None:
    a = [_hit(1, 0.5), _hit(2, 0.4)]
    b = [_hit(2, 0.4), _hit(3, 0.3)]
    merged = rrf_merge([a, b], 3)
    assert [h.chunk_id for h in merged] == [2, 1, 3]
    assert merged[0].score == pytest.approx(1 / 62 + 1 / 61)


def test_index_fixture_closes(index: Index, tmp_path: Path) -> None:
    index.close()
