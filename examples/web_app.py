"""A Starlette web app that calls parallelrag's sync and async APIs inside request handlers.

    pip install starlette uvicorn
    python examples/web_app.py            # serves on http://127.0.0.1:8000

Routes: ``/search?q=`` (a sync handler: Starlette runs it in a worker thread, the blocking
``index.search`` waits there without the GIL), ``/asearch?q=`` and ``/answer?q=`` (async
handlers: ``await index.asearch`` / ``index.aanswer`` bridge from the server's event loop to
parallelrag's runtime loop), ``/complete?prompt=`` (async, ``await llm.acomplete``) and
``/complete-sync?prompt=`` (sync, ``llm.complete``). The same clients serve every request and
every thread; their rate and concurrency limits are shared.

The LLM: ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` / ``EXAMPLE_LLM``, or the simulated provider.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from _provider import embedder_name, provider, write_sample_corpus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from parallelrag import EmbeddingClient, Index, LlmClient


def _hits(hits: list[Any]) -> list[dict[str, Any]]:
    return [{"source": h.source, "start": h.start, "end": h.end, "score": h.score}
            for h in hits]


def create_app(index_dir: Path, base_url: str, api_key: str | None) -> Starlette:
    """The app over an index at ``index_dir`` (built from ``docs`` beside it when empty)."""
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        index = Index.open(index_dir, embedder=EmbeddingClient.local(embedder_name()))
        await index.aingest([write_sample_corpus(index_dir.parent / "docs")])
        state["index"] = index
        state["llm"] = LlmClient.openai(os.environ.get("EXAMPLE_LLM", "gpt-4o-mini"),
                                        base_url=base_url, api_key=api_key)
        try:
            yield
        finally:
            index.close()

    def search(request: Request) -> JSONResponse:  # sync: runs in Starlette's thread pool
        hits = state["index"].search(request.query_params["q"], k=3)
        return JSONResponse({"hits": _hits(hits)})

    async def asearch(request: Request) -> JSONResponse:
        hits = await state["index"].asearch(request.query_params["q"], k=3)
        return JSONResponse({"hits": _hits(hits)})

    async def answer(request: Request) -> JSONResponse:
        ans = await state["index"].aanswer(request.query_params["q"], llm=state["llm"], k=3)
        return JSONResponse({"answer": ans.text, "sources": _hits(ans.hits)})

    async def complete(request: Request) -> JSONResponse:
        text = await state["llm"].acomplete(request.query_params["prompt"], max_tokens=64)
        return JSONResponse({"text": text})

    def complete_sync(request: Request) -> JSONResponse:  # sync client in a sync handler
        text = state["llm"].complete(request.query_params["prompt"], max_tokens=64)
        return JSONResponse({"text": text})

    return Starlette(routes=[
        Route("/search", search), Route("/asearch", asearch), Route("/answer", answer),
        Route("/complete", complete), Route("/complete-sync", complete_sync),
    ], lifespan=lifespan)


def main() -> None:
    try:
        import uvicorn  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise SystemExit("serving needs uvicorn: pip install uvicorn") from None
    with provider() as prov, tempfile.TemporaryDirectory() as tmp:
        app = create_app(Path(tmp) / "index", prov.base_url, prov.api_key)
        uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main()
