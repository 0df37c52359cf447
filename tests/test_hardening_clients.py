"""Hostile-user probes of the embedding and LLM clients: odd inputs that once slipped through
(lone surrogates on local models, non-finite vectors from a user's function, nonsense options)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from parallelrag import EmbeddingClient, LlmClient
from parallelrag.errors import BadRequestError, BatchError, ConfigError
from parallelrag.providers.local import MicroBatcher
from parallelrag.runtime import run_sync
from parallelrag.sim import SimServer

# ------------------------------------------------------------------ local models


@pytest.mark.parametrize("name", ["minilm", "wordllama"])
def test_local_model_takes_lone_surrogates(name: str) -> None:
    """A str with a lone surrogate (e.g. argv decoded with surrogateescape, or a JSON '\\ud800')
    is embedded like the same text with U+FFFD, as the remote path does, not a TypeError."""
    c = EmbeddingClient.local(name)
    v = c.embed("a\ud800b")
    assert v.shape == (c.dimension,) and np.isfinite(v).all()
    rows = c.embed_many(["\udced\udca0\udc80", "plain"])
    assert rows.shape == (2, c.dimension)
    assert np.allclose(rows[0], c.embed("\ufffd\ufffd\ufffd"), atol=1e-5)


def test_local_model_truncates_text_with_lone_surrogates() -> None:
    c = EmbeddingClient.local("minilm", truncate=True)
    v = c.embed("word\ud800 " * 1000)
    assert v.shape == (384,) and np.isfinite(v).all()


def test_micro_batcher_failure_of_one_caller_spares_the_others() -> None:
    """Concurrent callers coalesced into one model call: when the model call fails because of
    one caller's input, the other callers still get their vectors."""

    def encode(texts: list[str]) -> np.ndarray:
        if "boom" in texts:
            raise ValueError("model cannot take 'boom'")
        return np.ones((len(texts), 2), dtype=np.float32)

    async def go() -> list[object]:
        import asyncio

        b = MicroBatcher(encode, 64)
        return list(await asyncio.gather(
            b.submit(["ok 1"]), b.submit(["boom"]), b.submit(["ok 2", "ok 3"]),
            return_exceptions=True,
        ))

    r1, r2, r3 = run_sync(go())
    assert isinstance(r2, ValueError)
    assert isinstance(r1, np.ndarray) and r1.shape == (1, 2)
    assert isinstance(r3, np.ndarray) and r3.shape == (2, 2)


# ------------------------------------------------------------------ from_function


def test_function_with_nan_rows_fails_those_inputs_only() -> None:
    """NaN/inf vectors would poison an index (every cosine with them is NaN): the inputs whose
    rows are not finite fail, the others are embedded, nothing non-finite is cached."""

    def fn(texts: list[str]) -> np.ndarray:
        out = np.ones((len(texts), 3), dtype=np.float64)
        for i, t in enumerate(texts):
            if t == "nan":
                out[i, 1] = np.nan
            if t == "inf":
                out[i, 0] = np.inf
        return out

    c = EmbeddingClient.from_function(fn)
    with pytest.raises(BatchError) as ei:
        c.embed_many(["good", "nan", "also good", "inf"])
    assert sorted(ei.value.failures) == [1, 3]
    assert "not finite" in str(ei.value.failures[1])
    r = c.embed_batch_parallel([["good", "nan"], ["fine"]])
    assert r.errors[1] is None and r.embeddings[1] is not None
    assert list(r.input_errors[0]) == [1]
    with pytest.raises(Exception, match="not finite"):
        c.embed("nan")


def test_function_returning_complex_numbers_is_an_error() -> None:
    c = EmbeddingClient.from_function(lambda t: np.ones((len(t), 3)) * 1j)
    with pytest.raises(ConfigError, match="complex"):
        c.embed_many(["a"])


# ------------------------------------------------------------------ options


def test_llm_from_url_rejects_non_strings_and_bad_booleans() -> None:
    with pytest.raises(ConfigError):
        LlmClient.from_url(None)
    with pytest.raises(ConfigError, match="adaptive"):
        LlmClient.from_url("openai://m?base_url=http://127.0.0.1:1/v1&adaptive=maybe",
                           api_key="k")
    ok = LlmClient.from_url("openai://m?base_url=http://127.0.0.1:1/v1&adaptive=off&rpm=5",
                            api_key="k")
    assert "adaptive=false" in ok.spec and "rpm=5" in ok.spec


def test_llm_rejects_non_finite_temperature(sim: SimServer) -> None:
    c = LlmClient.openai("gpt-4o-mini", base_url=sim.url, api_key="k")
    sim.reset_stats()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(BadRequestError, match="temperature"):
            c.complete("hi", temperature=bad)
    assert sim.stats()["requests"] == 0
    assert c.complete("hi", temperature=0.5)


def test_many_threads_embed_surrogates_on_a_local_model() -> None:
    """Threads sharing one micro-batcher, some with lone surrogates: every call succeeds."""
    c = EmbeddingClient.local("minilm")
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            text = f"text {i}" + ("\udc80" if i % 2 else "")
            assert c.embed(text).shape == (384,)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ------------------------------------------------------------------ token counting


@pytest.mark.parametrize("model,provider", [("text-embedding-3-small", "openai"),
                                            ("claude-x", "anthropic")])
def test_truncate_keeps_a_true_prefix_with_lone_surrogates(model: str, provider: str) -> None:
    """``truncate`` promises a prefix: lone surrogates inside it are kept (not dropped from the
    middle of the text), and the prefix still counts within the limit."""
    from parallelrag.providers.tokens import counter_for

    counter = counter_for(model, provider)
    for text in ("x\ud800" * 100, "\ud800" * 100, "日本\udc80語" * 50):
        out = counter.truncate(text, 5)
        assert text.startswith(out), (text[:12], out)
        assert out and counter.count(out) <= 5


def test_local_spec_with_a_remote_option_is_a_config_error() -> None:
    """`--embed 'minilm?rpm=5'`: a ConfigError naming the option (it was a raw TypeError from
    the constructor, which the CLI reports as 'unexpected')."""
    for spec in ("minilm?rpm=5", "local:wordllama?batch_size=3", "wordllama?bogus=1"):
        with pytest.raises(ConfigError, match=r"rpm|batch_size|bogus"):
            EmbeddingClient.from_url(spec)
    assert EmbeddingClient.from_url("minilm?truncate=true&skip_empty=1").truncate


def test_embed_many_takes_a_generator(sim: SimServer) -> None:
    """A generator of texts is embedded, not silently consumed by validation and answered with
    zero rows."""
    c = EmbeddingClient.openai("text-embedding-3-small", base_url=sim.url, api_key="k")
    rows = c.embed_many(t for t in ["a", "b", "c"])
    assert rows.shape == (3, 1536)
    assert np.allclose(rows, c.embed_many(["a", "b", "c"]))

    async def agen() -> np.ndarray:
        return await c.aembed_many(t for t in ["a", "b"])

    assert run_sync(agen()).shape == (2, 1536)


def test_batch_parallel_refuses_a_string_for_a_batch(sim: SimServer) -> None:
    """`embed_batch_parallel(["some text"])` would embed each character as an input."""
    c = EmbeddingClient.openai("text-embedding-3-small", base_url=sim.url, api_key="k")
    sim.reset_stats()
    with pytest.raises(TypeError):
        c.embed_batch_parallel("abc")
    with pytest.raises(TypeError):
        c.embed_batch_parallel(["some text", ["ok"]])
    assert sim.stats()["requests"] == 0


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_per_call_max_concurrency_must_be_a_positive_int(sim: SimServer, bad: object) -> None:
    e = EmbeddingClient.openai("text-embedding-3-small", base_url=sim.url, api_key="k")
    llm = LlmClient.openai("gpt-4o-mini", base_url=sim.url, api_key="k")
    with pytest.raises(ConfigError, match="max_concurrency"):
        e.embed_batch_parallel([["a"]], max_concurrency=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_concurrency"):
        llm.complete_many(["a"], max_concurrency=bad)
    assert e.embed_batch_parallel([["a"]], max_concurrency=None).ok
    assert llm.complete_many(["a"], max_concurrency=2)


def test_bad_model_names_keys_and_headers_are_config_errors_up_front() -> None:
    """Caught at construction, not as an AttributeError or a 'Forbidden control character'
    ValueError at the first request; the key is never shown."""
    with pytest.raises(ConfigError, match="string"):
        EmbeddingClient.openai(5, base_url="http://127.0.0.1:9/v1", api_key="k")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="string"):
        LlmClient.anthropic(5, api_key="k")  # type: ignore[arg-type]
    for make in (lambda k: EmbeddingClient.openai("m", base_url="http://127.0.0.1:9/v1", api_key=k),
                 lambda k: LlmClient.anthropic("claude", api_key=k)):
        with pytest.raises(ConfigError, match="line break") as info:
            make("sk-pasted-SECRET-key\n")
        assert "SECRET" not in str(info.value)
    with pytest.raises(ConfigError, match="header"):
        EmbeddingClient.openai("m", base_url="http://127.0.0.1:9/v1", api_key="k",
                               headers={"x-team": "a\r\nx-evil: 1"})
