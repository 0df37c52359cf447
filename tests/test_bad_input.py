"""One input the provider rejects fails alone (issue 13).

The sim rejects (400, "maximum context length") a request that holds an input over its
``max_input_tokens``; the client's own limit is left high, so only the provider knows. The
client must split the request until the offender is alone: every other input is embedded and
only the offender's error is reported, by ``embed_many`` (``BatchError.failures``),
``embed_batch_parallel`` (``input_errors``) and an Index ingest (one report line).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parallelrag import EmbeddingClient, Index
from parallelrag.cache import EmbeddingCache
from parallelrag.errors import BadRequestError, BatchError
from parallelrag.sim import SimServer, sim_embedding

KEY = "sk-bad-input-test-123456"


def client(srv: SimServer, model: str, **kw: Any) -> EmbeddingClient:
    return EmbeddingClient.openai(model, base_url=srv.url, api_key=KEY, dimensions=16, **kw)


def expected(model: str, texts: list[str]) -> np.ndarray:
    return np.vstack([sim_embedding(model, t, 16) for t in texts])


def test_embed_many_isolates_the_offender(
    make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    srv = make_sim(latency=0.0, max_input_tokens=200)
    texts = [f"short text number {i}" for i in range(64)]
    texts[37] = "z" * 1000  # 250 tokens for the sim: rejected
    emb = client(srv, "iso", cache=EmbeddingCache(tmp_path / "c.sqlite"))
    with pytest.raises(BatchError) as info:
        emb.embed_many(texts)
    err = info.value
    assert err.failed_indices == [37]
    inner = err.failures[37]
    assert isinstance(inner, BadRequestError) and inner.status_code == 400
    assert "context length" in str(inner)
    sent = srv.stats()["requests"]
    assert sent <= 1 + 2 * 7  # one request, then a bisection: about 2 log2(64) more
    # every other input was embedded (and cached): embedding them again sends nothing
    good = [t for i, t in enumerate(texts) if i != 37]
    rows = emb.embed_many(good)
    assert srv.stats()["requests"] == sent
    assert np.allclose(rows, expected("iso", good), atol=1e-6)


def test_two_offenders_and_a_batch_wide_error(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.0, max_input_tokens=200)
    texts = [f"t{i}" for i in range(20)]
    texts[3] = "y" * 900
    texts[15] = "x" * 1200
    emb = client(srv, "two")
    with pytest.raises(BatchError) as info:
        emb.embed_many(texts)
    assert info.value.failed_indices == [3, 15]
    # a rejection that no split can fix (here: too many inputs per request for this server
    # is fixable, an invalid option is not) fails every input without a long bisection
    bad = EmbeddingClient.openai("two", base_url=srv.url, api_key=KEY, dimensions=0)
    srv.reset_stats()
    with pytest.raises(BatchError) as info2:
        bad.embed_many([f"u{i}" for i in range(64)])
    assert len(info2.value.failures) == 64
    assert srv.stats()["requests"] <= 4


def test_batch_parallel_reports_the_offender_alone(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.01, max_input_tokens=200)
    emb = client(srv, "bp1")
    batches = [[f"b{b} t{i}" for i in range(5)] for b in range(4)]
    batches[2] = ["fine", "z" * 1000, "fine too"]
    res = emb.embed_batch_parallel(batches, max_concurrency=2)
    assert [e is None for e in res.errors] == [True, True, False, True]
    assert list(res.input_errors[2]) == [1]
    err = res.errors[2]
    assert isinstance(err, BadRequestError) and err.status_code == 400
    assert res.input_errors[2][1] is err
    assert all(not d for i, d in enumerate(res.input_errors) if i != 2)
    for i in (0, 1, 3):
        got = res.embeddings[i]
        assert got is not None and np.allclose(got, expected("bp1", batches[i]), atol=1e-6)
    # the good inputs of the failed batch reached the provider and were embedded
    assert srv.stats()["embedding_inputs"] >= 5 * 3 + 2


def test_ingest_fails_only_the_document_with_the_bad_chunk(
    make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    srv = make_sim(latency=0.0, max_input_tokens=200)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"small{i:02d}.txt").write_text(f"a small file number {i}\n")
    (corpus / "huge.txt").write_text("z" * 1200 + "\n")  # one chunk the sim rejects
    index = Index.open(tmp_path / "idx", embedder=client(srv, "ingest"))
    try:
        report = index.ingest(corpus)
    finally:
        index.close()
    failed = [(Path(s).name, why) for s, why in report.failed]
    print(report)
    assert [name for name, _ in failed] == ["huge.txt"]
    assert "context length" in failed[0][1]
    assert report.added == 30


def test_a_request_too_big_for_the_server_is_split(make_sim: Callable[..., SimServer]) -> None:
    """``400 'input' has 60 items; at most 16``: the halves are sent instead, nothing fails."""
    srv = make_sim(latency=0.0, max_inputs=16)
    texts = [f"item {i}" for i in range(60)]
    emb = client(srv, "split", batch_size=60)
    rows = emb.embed_many(texts)
    assert np.allclose(rows, expected("split", texts), atol=1e-6)
    st = srv.stats()
    assert st["bad_requests"] == 3  # 60, then 30 and 30
    assert st["embedding_inputs"] == 60
