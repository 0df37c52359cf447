"""LlamaIndex classes over parallelrag: an embedding model, an LLM and a retriever.

::

    from llama_index.core import Settings, VectorStoreIndex
    from parallelrag import EmbeddingClient, Index, LlmClient
    from parallelrag.adapters.llamaindex import (
        ParallelRagEmbedding, ParallelRagLLM, ParallelRagRetriever)

    Settings.embed_model = ParallelRagEmbedding(EmbeddingClient.local("minilm"))
    Settings.llm = ParallelRagLLM(client=LlmClient.openai("gpt-4o-mini"))
    retriever = ParallelRagRetriever(Index.open("./rag-index"), k=4)

Each is the framework's own base class (``BaseEmbedding``, ``FunctionCallingLLM``,
``BaseRetriever``), so it goes wherever LlamaIndex takes one. Calls run on the parallelrag
runtime: the shared rate limits, adaptive concurrency, retries and caches apply. Needs the
``llamaindex`` extra (``llama-index-core``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ._spec import EmbedderSpec, missing_extra

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.base.llms.types import (
        ChatMessage,
        ChatResponse,
        ChatResponseAsyncGen,
        ChatResponseGen,
        CompletionResponse,
        CompletionResponseAsyncGen,
        CompletionResponseGen,
        LLMMetadata,
        MessageRole,
        TextBlock,
        ToolCallBlock,
    )
    from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
    from llama_index.core.llms.function_calling import FunctionCallingLLM
    from llama_index.core.llms.llm import ToolSelection
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from pydantic import ConfigDict, Field, PrivateAttr
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise missing_extra("LlamaIndex", "llamaindex", _exc) from _exc

from ..embeddings import EmbeddingClient
from ..errors import BadRequestError, ConfigError
from ..llm import LlmClient, LlmResponse
from ..pipeline import Index
from ..store import Hit

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["DEFAULT_EMBED_BATCH_SIZE", "ParallelRagEmbedding", "ParallelRagLLM",
           "ParallelRagRetriever"]

DEFAULT_EMBED_BATCH_SIZE = 2048
"""Texts per call from LlamaIndex into the client (LlamaIndex's own default is 10, and its
maximum is 2048). The client packs each call into requests by the provider's count and token
limits and sends them concurrently, so one large call is what keeps the provider busy."""


# --------------------------------------------------------------------------- embeddings
def _rebuild_embedding(spec: EmbedderSpec, fields: dict[str, Any]) -> ParallelRagEmbedding:
    return ParallelRagEmbedding._from_spec(spec, **fields)


class ParallelRagEmbedding(BaseEmbedding):
    """LlamaIndex ``BaseEmbedding`` over an :class:`~parallelrag.embeddings.EmbeddingClient`.

    ``client`` may be a client or a one-string config (``"minilm"``, ``"openai:MODEL"``).
    ``embed_batch_size`` defaults to :data:`DEFAULT_EMBED_BATCH_SIZE`.

    Picklable, so ``IngestionPipeline.run(num_workers=N)`` can send it to worker processes: it
    pickles as an :class:`~parallelrag.adapters.EmbedderSpec` (the client's spec, API key and
    cache path) and each worker builds its own client from it on first use.
    """

    embed_batch_size: int = Field(default=DEFAULT_EMBED_BATCH_SIZE, gt=0, le=2048)
    _client: EmbeddingClient | None = PrivateAttr(default=None)
    _spec: EmbedderSpec | None = PrivateAttr(default=None)

    def __init__(self, client: EmbeddingClient | str = "minilm", **kw: Any) -> None:
        if isinstance(client, str):
            client = EmbeddingClient.from_url(client)
        kw.setdefault("model_name", client.model)
        super().__init__(**kw)
        self._client = client
        self._spec = EmbedderSpec.of(client)

    @classmethod
    def _from_spec(cls, spec: EmbedderSpec, **fields: Any) -> ParallelRagEmbedding:
        """An instance whose client is built from ``spec`` on first use (in a worker)."""
        obj = cls.model_construct(**fields)
        obj._spec = spec
        obj._client = None
        return obj

    @classmethod
    def class_name(cls) -> str:
        return "ParallelRagEmbedding"

    @property
    def client(self) -> EmbeddingClient:
        if self._client is None:
            if self._spec is None:
                raise ConfigError("ParallelRagEmbedding has no client")
            self._client = self._spec.build()
        return self._client

    def __reduce__(self) -> tuple[Any, tuple[EmbedderSpec, dict[str, Any]]]:
        spec = self._spec
        if spec is None:
            raise ConfigError(
                f"{self.client!r} cannot be rebuilt in another process (no spec), so this "
                "embedding cannot be pickled; run the pipeline without num_workers"
            )
        fields = {"model_name": self.model_name, "embed_batch_size": self.embed_batch_size,
                  "num_workers": self.num_workers}
        return (_rebuild_embedding, (spec, fields))

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> ParallelRagEmbedding:
        # clients are thread-safe and meant to be shared: a copy shares this one's client
        obj = copy.copy(self)
        obj._client = self._client
        obj._spec = self._spec
        return obj

    def _get_query_embedding(self, query: str) -> list[float]:
        # the query side: an asymmetric model's query prompt (see EmbeddingClient.embed_query)
        row: list[float] = self.client.embed_query(query).tolist()
        return row

    def _get_text_embedding(self, text: str) -> list[float]:
        row: list[float] = self.client.embed(text).tolist()
        return row

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        rows: list[list[float]] = self.client.embed_many(texts).tolist()
        return rows

    async def _aget_query_embedding(self, query: str) -> list[float]:
        row: list[float] = (await self.client.aembed_query(query)).tolist()
        return row

    async def _aget_text_embedding(self, text: str) -> list[float]:
        row: list[float] = (await self.client.aembed(text)).tolist()
        return row

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        rows: list[list[float]] = (await self.client.aembed_many(texts)).tolist()
        return rows


# --------------------------------------------------------------------------- LLM
_ROLES = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}


def _wire_tool_call(tc: Any, i: int) -> dict[str, Any]:
    """A tool call found on a LlamaIndex message → the OpenAI shape."""
    if isinstance(tc, ToolCallBlock):
        args = tc.tool_kwargs
        return {"id": tc.tool_call_id or f"call_{i}", "type": "function",
                "function": {"name": tc.tool_name,
                             "arguments": args if isinstance(args, str)
                             else orjson.dumps(args).decode()}}
    d = tc.model_dump() if hasattr(tc, "model_dump") else dict(tc)
    fn = dict(d.get("function") or {})
    if not isinstance(fn.get("arguments"), str):
        fn["arguments"] = orjson.dumps(fn.get("arguments") or {}).decode()
    return {"id": d.get("id") or f"call_{i}", "type": "function", "function": fn}


def _to_wire(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex messages → OpenAI-shaped dicts (which LlmClient takes for every provider)."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        role = _ROLES.get(m.role)
        if role is None:
            raise BadRequestError(f"messages[{i}]: unsupported role {m.role!r}")
        text = "".join(b.text for b in m.blocks if isinstance(b, TextBlock))
        d: dict[str, Any] = {"role": role, "content": text}
        if role == "assistant":
            calls: list[Any] = [b for b in m.blocks if isinstance(b, ToolCallBlock)]
            calls = calls or list(m.additional_kwargs.get("tool_calls") or [])
            if calls:
                d["tool_calls"] = [_wire_tool_call(tc, j) for j, tc in enumerate(calls)]
        elif role == "tool":
            call_id = m.additional_kwargs.get("tool_call_id")
            if not call_id:
                raise BadRequestError(f"messages[{i}]: a tool message needs "
                                      "additional_kwargs['tool_call_id']")
            d["tool_call_id"] = call_id
        out.append(d)
    return out


def _chat_message(resp: LlmResponse) -> ChatMessage:
    blocks: list[Any] = [TextBlock(text=resp.text)]
    blocks += [ToolCallBlock(tool_call_id=c.id, tool_name=c.name, tool_kwargs=c.arguments)
               for c in resp.tool_calls]
    extra: dict[str, Any] = {}
    if resp.tool_calls:
        extra["tool_calls"] = [c.to_openai() for c in resp.tool_calls]
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=extra)


def _info(resp: LlmResponse | None) -> dict[str, Any]:
    if resp is None:
        return {}
    u = resp.usage
    return {"finish_reason": resp.finish_reason, "model": resp.model,
            "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens}


_OPTIONS = ("tools", "tool_choice", "response_format", "max_tokens", "temperature", "stop",
            "system")


def _chat_delta(text: str, delta: str) -> ChatResponse:
    """One step of a chat stream: the text so far and its newest piece."""
    return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
                        delta=delta)


def _tool_call_tail(resp: LlmResponse | None) -> ChatResponse | None:
    """The closing response of a chat stream that ended in tool calls (None otherwise)."""
    if resp is None or not resp.tool_calls:
        return None
    return ChatResponse(message=_chat_message(resp), delta="", additional_kwargs=_info(resp))


class ParallelRagLLM(FunctionCallingLLM):
    """LlamaIndex LLM over an :class:`~parallelrag.llm.LlmClient`: ``chat``, ``complete``,
    ``stream_chat``, ``stream_complete`` and their async twins, and tool calling
    (``chat_with_tools``, ``predict_and_call``, ``FunctionAgent``).

    ``max_tokens`` and ``temperature`` are defaults for every call (call keywords override them);
    ``context_window`` tells LlamaIndex how much prompt it may pack.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    client: LlmClient = Field(exclude=True)
    # refused when the LLM is built, not on its first call
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    context_window: int = Field(default=128_000, gt=0)

    @classmethod
    def class_name(cls) -> str:
        return "ParallelRagLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_tokens or 256,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=self.client.model,
        )

    def _options(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if self.max_tokens is not None:
            kw["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            kw["temperature"] = self.temperature
        for key, value in kwargs.items():
            if key in _OPTIONS and value is not None:
                kw[key] = value
        if not kw.get("tools"):
            kw.pop("tools", None)
            kw.pop("tool_choice", None)
        return kw

    # ------------------------------------------------------------------ chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        resp = self.client.complete_full(_to_wire(messages), **self._options(kwargs))
        return ChatResponse(message=_chat_message(resp), raw=resp.raw,
                            additional_kwargs=_info(resp))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        resp = await self.client.acomplete_full(_to_wire(messages), **self._options(kwargs))
        return ChatResponse(message=_chat_message(resp), raw=resp.raw,
                            additional_kwargs=_info(resp))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        wire = _to_wire(messages)
        options = self._options(kwargs)

        def gen() -> ChatResponseGen:
            text = ""
            with self.client.stream(wire, **options) as stream:
                for delta in stream:
                    text += delta
                    yield _chat_delta(text, delta)
            if (tail := _tool_call_tail(stream.response)) is not None:
                yield tail

        return gen()

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        wire = _to_wire(messages)
        options = self._options(kwargs)

        async def gen() -> ChatResponseAsyncGen:
            text = ""
            async with self.client.astream(wire, **options) as stream:
                async for delta in stream:
                    text += delta
                    yield _chat_delta(text, delta)
            if (tail := _tool_call_tail(stream.response)) is not None:
                yield tail

        return gen()

    # ------------------------------------------------------------------ completion
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        resp = self.client.complete_full(prompt, **self._options(kwargs))
        return CompletionResponse(text=resp.text, raw=resp.raw, additional_kwargs=_info(resp))

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        resp = await self.client.acomplete_full(prompt, **self._options(kwargs))
        return CompletionResponse(text=resp.text, raw=resp.raw, additional_kwargs=_info(resp))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        options = self._options(kwargs)

        def gen() -> CompletionResponseGen:
            text = ""
            with self.client.stream(prompt, **options) as stream:
                for delta in stream:
                    text += delta
                    yield CompletionResponse(text=text, delta=delta)

        return gen()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        options = self._options(kwargs)

        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            async with self.client.astream(prompt, **options) as stream:
                async for delta in stream:
                    text += delta
                    yield CompletionResponse(text=text, delta=delta)

        return gen()

    # ------------------------------------------------------------------ tool calling
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        specs = [t.metadata.to_openai_tool() for t in tools]
        out: dict[str, Any] = {"messages": messages, **kwargs}
        if specs:
            out["tools"] = specs
            out["tool_choice"] = "required" if tool_required else "auto"
        return out

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
        if not calls and error_on_no_tool_call:
            raise BadRequestError(f"expected at least one tool call, got none: "
                                  f"{response.message.content!r}")
        return [
            ToolSelection(tool_id=c.tool_call_id or f"call_{i}", tool_name=c.tool_name,
                          tool_kwargs=c.tool_kwargs if isinstance(c.tool_kwargs, dict)
                          else orjson.loads(c.tool_kwargs or "{}"))
            for i, c in enumerate(calls)
        ]


# --------------------------------------------------------------------------- retriever
def _node(hit: Hit) -> NodeWithScore:
    meta = {**hit.metadata, "source": hit.source, "chunk_id": hit.chunk_id, "start": hit.start,
            "end": hit.end, "chunk_index": hit.index}
    node = TextNode(id_=str(hit.chunk_id), text=hit.text, metadata=meta,
                    start_char_idx=hit.start, end_char_idx=hit.end)
    return NodeWithScore(node=node, score=hit.score)


class ParallelRagRetriever(BaseRetriever):
    """LlamaIndex ``BaseRetriever`` over :meth:`Index.search <parallelrag.Index.search>`:
    ``k`` chunks per query, ``mode`` ``"hybrid"`` (default), ``"vector"`` or ``"keyword"``,
    ``where`` a metadata filter. Returns ``NodeWithScore`` with a ``TextNode`` per chunk (id =
    chunk id, character offsets into the source, metadata plus ``source`` and ``chunk_index``).
    """

    def __init__(self, index: Index, k: int = 4, mode: str = "hybrid",
                 where: dict[str, Any] | None = None, **kw: Any) -> None:
        if mode not in ("hybrid", "vector", "keyword"):
            raise ConfigError(f"mode must be hybrid, vector or keyword, not {mode!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive int, not {k!r}")
        super().__init__(**kw)
        self.index = index
        self.k = k
        self.mode = mode
        self.where = where

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.index.search(query_bundle.query_str, k=self.k, mode=self.mode,
                                 where=self.where)
        return [_node(h) for h in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = await self.index.asearch(query_bundle.query_str, k=self.k, mode=self.mode,
                                        where=self.where)
        return [_node(h) for h in hits]
