"""The public factories take ``max_response_bytes=`` and hand it to the provider they build.

Each client talks over a real socket to a small 127.0.0.1 server (``tests/providers/
http_servers.py``) that answers a well-formed response padded to ``BODY`` bytes. With the
default limit the call succeeds (so the body itself is fine); with ``max_response_bytes=LIMIT``
from the factory it fails with :class:`ResponseTooLargeError` after exactly one request (not
retried). ``PARALLELRAG_MAX_RESPONSE_BYTES`` is unset, so only the factory argument can set
the small limit.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent / "providers"))
from http_servers import Scripted

from parallelrag import EmbeddingClient, LlmClient
from parallelrag.errors import ConfigError, ResponseTooLargeError
from parallelrag.providers.rerank import HttpReranker

KEY = "sk-factory-limit-SECRET-0123456789"
LIMIT = 4096
BODY = 64 * 1024

CHAT = {"id": "c1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
MESSAGES = {"id": "msg1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": "fine"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 1}}
EMBEDDINGS = {"object": "list", "model": "e",
              "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.5, 0.5, 0.5]}],
              "usage": {"prompt_tokens": 1, "total_tokens": 1}}
RERANK = {"results": [{"index": 0, "relevance_score": 0.9}, {"index": 1, "relevance_score": 0.1}]}


@pytest.fixture(autouse=True)
def _no_env_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARALLELRAG_MAX_RESPONSE_BYTES", raising=False)


def _padded(payload: dict[str, Any]) -> bytes:
    body = orjson.dumps({**payload, "padding": ""})
    return orjson.dumps({**payload, "padding": "x" * (BODY - len(body))})


def _server(payload: dict[str, Any]) -> Scripted:
    body = _padded(payload)
    assert len(body) == BODY

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body))
        return False

    return Scripted(h)


def _llm_openai(url: str, **kw: Any) -> Callable[[], object]:
    llm = LlmClient.openai("m", base_url=url, api_key=KEY, timeout=10.0, max_attempts=3, **kw)
    return lambda: llm.complete("hello")


def _llm_azure(url: str, **kw: Any) -> Callable[[], object]:
    llm = LlmClient.azure("dep", endpoint=url, api_key=KEY, timeout=10.0, max_attempts=3, **kw)
    return lambda: llm.complete("hello")


def _llm_anthropic(url: str, **kw: Any) -> Callable[[], object]:
    llm = LlmClient.anthropic("m", base_url=url, api_key=KEY, timeout=10.0, max_attempts=3,
                              **kw)
    return lambda: llm.complete("hello")


def _llm_from_url(url: str, **kw: Any) -> Callable[[], object]:
    llm = LlmClient.from_url(f"openai://m?base_url={url}&max_attempts=3", api_key=KEY, **kw)
    return lambda: llm.complete("hello")


def _emb_openai(url: str, **kw: Any) -> Callable[[], object]:
    emb = EmbeddingClient.openai("e", base_url=url, api_key=KEY, timeout=10.0, max_attempts=3,
                                 **kw)
    return lambda: emb.embed("hello").tolist()


def _emb_azure(url: str, **kw: Any) -> Callable[[], object]:
    emb = EmbeddingClient.azure("dep", endpoint=url, api_key=KEY, timeout=10.0, max_attempts=3,
                                **kw)
    return lambda: emb.embed("hello").tolist()


def _emb_from_url(url: str, **kw: Any) -> Callable[[], object]:
    emb = EmbeddingClient.from_url(f"openai://e?base_url={url}&max_attempts=3", api_key=KEY,
                                   **kw)
    return lambda: emb.embed("hello").tolist()


def _rerank_from_env(url: str, **kw: Any) -> Callable[[], object]:
    rr = HttpReranker.from_env(base_url=url, model="r", api_key=KEY, **kw)
    return lambda: rr.scores("query", ["a", "b"])


CASES: list[tuple[str, Callable[..., Callable[[], object]], dict[str, Any]]] = [
    ("llm-openai", _llm_openai, CHAT),
    ("llm-azure", _llm_azure, CHAT),
    ("llm-anthropic", _llm_anthropic, MESSAGES),
    ("llm-from_url", _llm_from_url, CHAT),
    ("embed-openai", _emb_openai, EMBEDDINGS),
    ("embed-azure", _emb_azure, EMBEDDINGS),
    ("embed-from_url", _emb_from_url, EMBEDDINGS),
    ("rerank-from_env", _rerank_from_env, RERANK),
]


@pytest.mark.parametrize(("make", "payload"), [(m, p) for _, m, p in CASES],
                         ids=[n for n, _, _ in CASES])
def test_factory_passes_max_response_bytes(make: Callable[..., Callable[[], object]],
                                           payload: dict[str, Any]) -> None:
    with _server(payload) as srv:
        assert make(srv.url())()  # the default limit takes the body
        assert len(srv.requests) == 1
    with _server(payload) as srv:
        call = make(srv.url(), max_response_bytes=LIMIT)
        with pytest.raises(ResponseTooLargeError) as info:
            call()
        assert info.value.limit == LIMIT
        assert KEY not in str(info.value) and KEY not in repr(info.value)
        assert len(srv.requests) == 1, len(srv.requests)


@pytest.mark.parametrize("make", [m for _, m, _ in CASES], ids=[n for n, _, _ in CASES])
@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "big"])
def test_factory_refuses_a_bad_limit(make: Callable[..., Callable[[], object]],
                                     bad: object) -> None:
    with pytest.raises(ConfigError, match="max_response_bytes"):
        make("http://127.0.0.1:9", max_response_bytes=bad)


def test_the_limit_survives_spec_and_remote_rebuild() -> None:
    """A client rebuilt from its spec (e.g. on a Ray actor) keeps the limit."""
    with _server(CHAT) as srv:
        llm = LlmClient.openai("m", base_url=srv.url(), api_key=KEY, max_response_bytes=LIMIT)
        assert f"max_response_bytes={LIMIT}" in llm.spec
        again = LlmClient.from_url(llm.spec, **llm.remote_kwargs())
        with pytest.raises(ResponseTooLargeError):
            again.complete("hello")
    with _server(EMBEDDINGS) as srv:
        emb = EmbeddingClient.openai("e", base_url=srv.url(), api_key=KEY,
                                     max_response_bytes=LIMIT)
        assert f"max_response_bytes={LIMIT}" in emb.spec
        assert emb.identity == EmbeddingClient.openai("e", base_url=srv.url(),
                                                      api_key=KEY).identity
        rebuilt = EmbeddingClient.from_url(emb.spec, **emb.remote_kwargs())
        with pytest.raises(ResponseTooLargeError):
            rebuilt.embed("hello")
