"""LangChain classes over parallelrag: embeddings, a chat model and a retriever.

::

    from parallelrag import EmbeddingClient, Index, LlmClient
    from parallelrag.adapters.langchain import (
        ParallelRagChatModel, ParallelRagEmbeddings, ParallelRagRetriever)

    embeddings = ParallelRagEmbeddings(EmbeddingClient.local("minilm"))   # an ``Embeddings``
    chat = ParallelRagChatModel(client=LlmClient.openai("gpt-4o-mini"))   # a ``BaseChatModel``
    retriever = ParallelRagRetriever(index=Index.open("./rag-index"), k=4)  # a ``BaseRetriever``

Each is the framework's own base class, so it goes wherever LangChain takes one (LCEL chains,
vector stores, agents). Calls run on the parallelrag runtime: the shared rate limits, adaptive
concurrency, retries and caches apply, and sync calls wait without holding the GIL.
Needs the ``langchain`` extra (``langchain-core``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Literal

import orjson

from ._spec import EmbedderSpec, missing_extra

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForLLMRun,
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForLLMRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document as LcDocument
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel, LanguageModelInput
    from langchain_core.messages import (
        AIMessage,
        AIMessageChunk,
        BaseMessage,
        ChatMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
    )
    from langchain_core.messages.ai import UsageMetadata
    from langchain_core.messages.tool import tool_call, tool_call_chunk
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import Runnable
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from pydantic import ConfigDict, Field
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise missing_extra("LangChain", "langchain", _exc) from _exc

from ..embeddings import EmbeddingClient
from ..errors import BadRequestError, ConfigError
from ..llm import LlmClient, LlmResponse, Usage
from ..pipeline import Index
from ..store import Hit

__all__ = ["ParallelRagChatModel", "ParallelRagEmbeddings", "ParallelRagRetriever"]


# --------------------------------------------------------------------------- embeddings
def _rebuild_embeddings(spec: EmbedderSpec) -> ParallelRagEmbeddings:
    return ParallelRagEmbeddings(spec.build())


class ParallelRagEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over an :class:`~parallelrag.embeddings.EmbeddingClient`.

    ``embed_documents`` sends all texts to ``embed_many`` at once: the client packs them into
    requests by the provider's count and token limits and runs them concurrently, deduplicates,
    and uses its cache. ``client`` may also be a one-string config (``"minilm"``,
    ``"openai:text-embedding-3-small"``). Picklable when the client can be rebuilt from its spec.
    """

    def __init__(self, client: EmbeddingClient | str = "minilm") -> None:
        self.client = EmbeddingClient.from_url(client) if isinstance(client, str) else client

    def __repr__(self) -> str:
        return f"ParallelRagEmbeddings({self.client!r})"

    def __reduce__(self) -> tuple[Any, tuple[EmbedderSpec]]:
        spec = EmbedderSpec.of(self.client)
        if spec is None:
            raise ConfigError(f"{self.client!r} cannot be rebuilt in another process (no spec)")
        return (_rebuild_embeddings, (spec,))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        rows: list[list[float]] = self.client.embed_many(texts).tolist()
        return rows

    def embed_query(self, text: str) -> list[float]:
        # the query side: an asymmetric model's query prompt (see EmbeddingClient.embed_query)
        row: list[float] = self.client.embed_query(text).tolist()
        return row

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        rows: list[list[float]] = (await self.client.aembed_many(texts)).tolist()
        return rows

    async def aembed_query(self, text: str) -> list[float]:
        row: list[float] = (await self.client.aembed_query(text)).tolist()
        return row


# --------------------------------------------------------------------------- chat model
def _content_text(content: Any) -> str:
    """The text of a LangChain message content (a string or a list of content blocks)."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, Mapping) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            kind = block.get("type") if isinstance(block, Mapping) else type(block).__name__
            raise BadRequestError(f"content blocks of type {kind!r} are not supported")
    return "".join(parts)


def _to_wire(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages → OpenAI-shaped dicts (which LlmClient takes for every provider)."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        text = _content_text(m.content)
        if isinstance(m, SystemMessage):
            out.append({"role": "system", "content": text})
        elif isinstance(m, HumanMessage):
            out.append({"role": "user", "content": text})
        elif isinstance(m, AIMessage):
            d: dict[str, Any] = {"role": "assistant", "content": text}
            if m.tool_calls:
                d["tool_calls"] = [
                    {
                        "id": tc.get("id") or f"call_{i}_{j}",
                        "type": "function",
                        "function": {"name": tc["name"],
                                     "arguments": orjson.dumps(tc.get("args") or {}).decode()},
                    }
                    for j, tc in enumerate(m.tool_calls)
                ]
            out.append(d)
        elif isinstance(m, ToolMessage):
            out.append({"role": "tool", "content": text, "tool_call_id": m.tool_call_id})
        elif isinstance(m, ChatMessage):
            role = {"human": "user", "ai": "assistant"}.get(m.role, m.role)
            out.append({"role": role, "content": text})
        else:
            raise BadRequestError(f"messages[{i}]: unsupported message type {m.type!r}")
    return out


def _usage(u: Usage | None) -> UsageMetadata | None:
    if u is None:
        return None
    return UsageMetadata(input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens,
                         total_tokens=u.total_tokens)


def _ai_message(resp: LlmResponse) -> AIMessage:
    usage = _usage(resp.usage)
    return AIMessage(
        content=resp.text,
        tool_calls=[tool_call(name=c.name, args=c.arguments, id=c.id) for c in resp.tool_calls],
        usage_metadata=usage,
        response_metadata={"finish_reason": resp.finish_reason, "model_name": resp.model},
    )


_OPTIONS = ("tools", "tool_choice", "response_format", "max_tokens", "temperature")


class ParallelRagChatModel(BaseChatModel):
    """LangChain ``BaseChatModel`` over an :class:`~parallelrag.llm.LlmClient`.

    Supports ``invoke``/``ainvoke``/``batch``, ``stream``/``astream`` (text deltas as they
    arrive; tool calls and usage in the last chunk), ``bind_tools`` (LangChain tools, functions,
    pydantic classes or OpenAI tool dicts) and ``with_structured_output``. ``max_tokens`` and
    ``temperature`` are defaults for every call; call keywords override them, and any other
    keyword is sent in the request body.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    client: LlmClient = Field(exclude=True)
    # refused when the model is built, not on its first call
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @property
    def _llm_type(self) -> str:
        return "parallelrag"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"provider": self.client.provider, "model_name": self.client.model}

    def _options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if self.max_tokens is not None:
            kw["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            kw["temperature"] = self.temperature
        extra: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key in _OPTIONS:
                if value is not None:
                    kw[key] = value
            elif key == "stop":
                stop = value
            elif not key.startswith("ls_"):
                extra[key] = value
        if stop:
            kw["stop"] = stop
        if extra:
            kw["extra_body"] = extra
        return kw

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        resp = self.client.complete_full(_to_wire(messages), **self._options(stop, kwargs))
        return self._result(resp)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        resp = await self.client.acomplete_full(_to_wire(messages), **self._options(stop, kwargs))
        return self._result(resp)

    @staticmethod
    def _result(resp: LlmResponse) -> ChatResult:
        gen = ChatGeneration(message=_ai_message(resp),
                             generation_info={"finish_reason": resp.finish_reason})
        u = resp.usage
        return ChatResult(generations=[gen], llm_output={
            "model_name": resp.model,
            "token_usage": {"prompt_tokens": u.prompt_tokens,
                            "completion_tokens": u.completion_tokens,
                            "total_tokens": u.total_tokens},
        })

    @staticmethod
    def _last_chunk(resp: LlmResponse | None) -> ChatGenerationChunk:
        """The closing chunk: tool calls (whole), usage and finish reason."""
        if resp is None:
            return ChatGenerationChunk(message=AIMessageChunk(content=""))
        chunks = [
            tool_call_chunk(name=c.name, args=orjson.dumps(c.arguments).decode(), id=c.id,
                            index=i)
            for i, c in enumerate(resp.tool_calls)
        ]
        msg = AIMessageChunk(
            content="", tool_call_chunks=chunks, usage_metadata=_usage(resp.usage),
            response_metadata={"finish_reason": resp.finish_reason, "model_name": resp.model},
        )
        return ChatGenerationChunk(message=msg,
                                   generation_info={"finish_reason": resp.finish_reason})

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        stream = self.client.stream(_to_wire(messages), **self._options(stop, kwargs))
        with stream:
            for delta in stream:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=delta))
                if run_manager is not None:
                    run_manager.on_llm_new_token(delta, chunk=chunk)
                yield chunk
        yield self._last_chunk(stream.response)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        stream = self.client.astream(_to_wire(messages), **self._options(stop, kwargs))
        async with stream:
            async for delta in stream:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=delta))
                if run_manager is not None:
                    await run_manager.on_llm_new_token(delta, chunk=chunk)
                yield chunk
        yield self._last_chunk(stream.response)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Any],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` to the model on every call of the returned runnable.

        ``tool_choice``: "auto", "none", "any"/"required"/True (must call a tool), a tool name,
        or an OpenAI tool-choice dict.
        """
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None and tool_choice is not False:
            if tool_choice is True or tool_choice == "any":
                tool_choice = "required"
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)


# --------------------------------------------------------------------------- retriever
def _document(hit: Hit) -> LcDocument:
    meta = {**hit.metadata, "source": hit.source, "score": hit.score, "chunk_id": hit.chunk_id,
            "start": hit.start, "end": hit.end, "chunk_index": hit.index}
    return LcDocument(page_content=hit.text, metadata=meta, id=str(hit.chunk_id))


class ParallelRagRetriever(BaseRetriever):
    """LangChain ``BaseRetriever`` over :meth:`Index.search <parallelrag.Index.search>`.

    ``k`` chunks per query, ``mode`` ``"hybrid"`` (default), ``"vector"`` or ``"keyword"``,
    ``where`` a metadata filter. Each ``Document`` has the chunk text as ``page_content``, the
    document's metadata plus ``source``, ``score``, ``chunk_id``, ``start``, ``end`` (character
    offsets in the source) and ``chunk_index``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Index = Field(exclude=True)
    k: int = Field(default=4, gt=0)
    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"
    where: dict[str, Any] | None = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[LcDocument]:
        hits = self.index.search(query, k=self.k, mode=self.mode, where=self.where)
        return [_document(h) for h in hits]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[LcDocument]:
        hits = await self.index.asearch(query, k=self.k, mode=self.mode, where=self.where)
        return [_document(h) for h in hits]
