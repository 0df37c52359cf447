"""What the adapters need that is not framework code: a picklable recipe for an embedder, and the
error raised when a framework is missing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import Secret
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..embeddings import EmbeddingClient

__all__ = ["EmbedderSpec", "missing_extra"]


def missing_extra(framework: str, extra: str, exc: ImportError) -> ConfigError:
    """The error for an adapter whose framework is not installed (names the extra to install)."""
    return ConfigError(
        f"the {framework} adapters need the {extra!r} extra: pip install 'parallelrag[{extra}]' "
        f"({exc})"
    )


@dataclass(frozen=True)
class EmbedderSpec:
    """A picklable recipe that rebuilds an :class:`~parallelrag.embeddings.EmbeddingClient` in
    another process (LlamaIndex's ``IngestionPipeline(num_workers=N)`` pickles its
    transformations into worker processes; a live client, with its event loop, sockets and model,
    cannot travel).

    ``url`` is the client's :attr:`~parallelrag.embeddings.EmbeddingClient.spec`; the API key the
    client holds travels as a masked :class:`~parallelrag.config.Secret` (the worker needs it and
    it never appears in a repr); ``cache`` is the path of the client's embedding cache, shared
    with the worker.
    """

    url: str
    api_key: Secret | None = None
    cache: str | None = None
    truncate: bool = False
    skip_empty: bool = False
    #: what the spec string leaves out (:meth:`EmbeddingClient.remote_kwargs`: extra headers, a
    #: proxy with credentials); never shown in the repr
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        key = ", api_key=Secret('***')" if self.api_key is not None else ""
        return f"EmbedderSpec({self.url!r}{key}, cache={self.cache!r})"

    @classmethod
    def of(cls, client: EmbeddingClient) -> EmbedderSpec | None:
        """The recipe for ``client``, or None when it cannot be rebuilt elsewhere (a client over
        an in-process function, for example)."""
        try:
            url = client.spec
        except Exception:
            return None
        if not isinstance(url, str) or not url:
            return None
        try:
            extra = dict(client.remote_kwargs())
        except ConfigError:  # a function embedder: its spec names no importable function
            return None
        key = extra.pop("api_key", None)
        cache = getattr(client.cache, "path", None) if client.cache is not None else None
        return cls(
            url=url,
            api_key=key if isinstance(key, Secret) else None,
            cache=str(cache) if cache is not None else None,
            truncate=bool(client.truncate),
            skip_empty=bool(client.skip_empty),
            extra=extra,
        )

    def build(self) -> EmbeddingClient:
        """A new client with the same provider, model and options."""
        from ..embeddings import EmbeddingClient

        kw: dict[str, Any] = dict(self.extra)
        if self.api_key is not None:
            kw["api_key"] = Secret(self.api_key.get())  # registers it for log redaction here
        if self.cache is not None:
            kw["cache"] = self.cache
        if self.truncate:
            kw["truncate"] = True
        if self.skip_empty:
            kw["skip_empty"] = True
        return EmbeddingClient.from_url(self.url, **kw)
