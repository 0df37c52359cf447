"""Every program in examples/ runs, against the simulated provider and a local model, so the
examples never rot. Each is run as a user would (a subprocess from the repository root), with
PARALLELRAG_SIM_URL pointing at a simulator the test started, so the test can check what the
server saw; the web app runs in-process under Starlette's TestClient."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from parallelrag.sim import SimServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.timeout(240)


def run_example(name: str, *args: str, base_url: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["EXAMPLE_EMBED"] = "wordllama"  # the fast local model; minilm is the default
    if base_url is not None:
        env["PARALLELRAG_SIM_URL"] = base_url
    p = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=200)
    assert p.returncode == 0, f"{name} failed:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def _chat_requests(srv: SimServer) -> int:
    by = srv.stats()["by_endpoint"]
    return sum(n for ep, n in by.items() if "chat" in ep)


def test_rag_pipeline(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim()
    out = run_example("rag_pipeline.py", base_url=srv.url)
    assert "ingest: 4 documents" in out
    assert "answer_many: 4 answers" in out
    assert out.count("  Q: ") == 4
    assert "streaming: " in out and "  [1] " in out
    assert _chat_requests(srv) == 5  # four answers at once, then one streamed


def test_parallel_embedding_from_threads(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.05)
    out = run_example("parallel_embedding.py", "--batches", "8", "--threads", "4",
                      base_url=srv.url)
    assert "same vectors in the same order: yes" in out
    m = re.search(r"speed-up: ([0-9.]+)x", out)
    assert m is not None, out
    st = srv.stats()
    assert st["embedding_inputs"] == 1 + 2 * 8 * 32  # warm-up, then every batch twice
    assert st["max_in_flight"] >= 2  # the threads' requests overlapped at the server


def test_parallel_embedding_starts_its_own_simulator() -> None:
    out = run_example("parallel_embedding.py", "--batches", "4", "--threads", "4")
    assert "same vectors in the same order: yes" in out


def test_workflow_tools_call_the_sync_clients(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim()
    out = run_example("workflow_tools.py", base_url=srv.url)
    for name in ("search_docs", "similarity", "summarize"):
        assert f"tool {name} (ok)" in out, out
    assert "researcher: final: " in out and "writer: " in out
    assert _chat_requests(srv) >= 4  # researcher twice, the nested summarize, the writer


def test_web_app_sync_and_async_handlers(make_sim: Callable[..., SimServer], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("starlette", reason="the web app example needs starlette")
    from starlette.testclient import TestClient

    monkeypatch.setenv("EXAMPLE_EMBED", "wordllama")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import web_app

    srv = make_sim(latency=0.02)
    app = web_app.create_app(tmp_path / "index", srv.url, None)
    routes = ["/search?q=rate+limits", "/asearch?q=rate+limits", "/answer?q=rate+limits",
              "/complete?prompt=hello", "/complete-sync?prompt=hello"]
    results: dict[str, Any] = {}
    with TestClient(app) as client:
        def call(path: str) -> None:
            r = client.get(path)
            results[path] = (r.status_code, r.json())

        threads = [threading.Thread(target=call, args=(p,)) for p in routes * 3]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert set(results) == set(routes)
    assert all(code == 200 for code, _ in results.values()), results
    for path in ("/search?q=rate+limits", "/asearch?q=rate+limits"):
        assert results[path][1]["hits"][0]["source"].endswith("limits.md")
    assert results["/answer?q=rate+limits"][1]["answer"]
    assert results["/complete?prompt=hello"][1]["text"]
    assert results["/complete-sync?prompt=hello"][1]["text"]
    assert _chat_requests(srv) == 9


def test_langchain_interop(make_sim: Callable[..., SimServer]) -> None:
    pytest.importorskip("langchain_core", reason="needs the langchain extra")
    srv = make_sim()
    out = run_example("langchain_interop.py", base_url=srv.url)
    assert out.count("Q: ") == 3 and "stream: sim reply" in out
    assert "best match: token buckets limit requests" in out
    assert _chat_requests(srv) == 4  # three batched questions, one streamed


def test_llamaindex_interop(make_sim: Callable[..., SimServer]) -> None:
    pytest.importorskip("llama_index.core", reason="needs the llamaindex extra")
    srv = make_sim()
    out = run_example("llamaindex_interop.py", base_url=srv.url)
    assert out.count("Q: ") == 2 and "sources: ['docs/limits.md'" in out
    assert "aquery x2: 2 answers" in out
    assert "best match: search.md" in out
    assert _chat_requests(srv) >= 4  # two queries, then two concurrent ones
