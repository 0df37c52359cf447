"""The ``parallelrag`` command: ingest, search, query, stats, remove (and the simulator, demos).

Exit codes: 0 ok; 1 a provider failed or part of the work failed (failures listed); 2 usage or
configuration. Errors print one line on stderr; ``--debug`` adds the traceback. Text output is
plain and never wrapped or cut to the terminal's width; ``--json`` prints one JSON document per
command, with the same names for the same things (see :mod:`parallelrag.cli_json`).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import click
import orjson

from . import cli_json
from .cli_progress import IngestView, count_files
from .cli_support import (
    EXIT_FAILURE,
    EXIT_USAGE,
    CliError,
    OpeningError,
    collect_warnings,
    debug_from_env,
    echo,
    echo_json,
    hide_credentials,
    report_error,
)
from .errors import ParallelRagError, StoreError

F = TypeVar("F", bound=Callable[..., Any])

_EPILOG = """\b
Exit codes:
  0  ok
  1  a provider failed (after retries) or part of the work failed; the failures are listed
  2  usage or configuration error (bad option, missing or unusable index, missing extra)
  130  interrupted (Ctrl-C); 141  the reader of stdout went away (`| head`)
\b
Environment:
  PARALLELRAG_INDEX    index folder (--index), default .parallelrag
  PARALLELRAG_EMBED    embedder for a new index (--embed), default minilm
  PARALLELRAG_LLM      LLM for `query` (--llm), e.g. openai:gpt-4o-mini
  PARALLELRAG_DEBUG    1: print tracebacks (--debug)
  PARALLELRAG_PROGRESS_EVERY  seconds between ingest progress lines when stderr is
                       not a terminal (default 10; 0: none)
  OPENAI_API_KEY       key for openai: embedders and LLMs
  OPENAI_BASE_URL      base URL of an OpenAI-compatible server (vLLM, TEI, Ollama, LM Studio)
  ANTHROPIC_API_KEY    key for anthropic: LLMs (ANTHROPIC_BASE_URL for another server)
  AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY, OPENAI_API_VERSION  for azure:// specs
  HTTPS_PROXY, HTTP_PROXY, NO_PROXY  proxies for provider requests
\b
Scores: hybrid search (the default) ranks by a fused score: the vector and
keyword (BM25) scores as z-scores within their candidate lists, weighted
0.8 / 0.2; higher is better, comparable only within one result list.
--mode vector gives cosine similarity, --mode keyword BM25.
Order: documents first (--rank-by document, the default): a document's best
chunk ranks with support from its other matching chunks and further chunks of
one document move down, so the top K spans more documents and scores need not
fall down the list; --rank-by chunk keeps the plain score order."""


class _Cli(click.Group):
    """A group that turns any exception of a command into one line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            echo("interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # the reader went away (`| head`): stop quietly, as the shell's own tools do; stdout
            # goes to /dev/null so that the flush at exit does not fail again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(141)
        except Exception as exc:
            debug = bool(ctx.meta.get("parallelrag.debug")) or debug_from_env()
            ctx.exit(report_error(exc, debug))


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.find_root().meta["parallelrag.debug"] = True
    return value


def _debug_option(f: F) -> F:
    return click.option("--debug", is_flag=True, expose_value=False, is_eager=True,
                        callback=_set_debug, envvar="PARALLELRAG_DEBUG", show_envvar=True,
                        help="print the traceback of an error (errors are one line otherwise)")(f)


@click.group(cls=_Cli, epilog=_EPILOG,
             context_settings={"help_option_names": ["-h", "--help"], "show_default": True,
                               "max_content_width": 100})
@click.version_option(package_name="parallelrag")
@_debug_option
def main() -> None:
    """parallelrag: parallel, GIL-free retrieval-augmented generation.

    Build an index with `ingest`, then `search` it or `query` it (an answer with numbered
    sources). Every command takes --index (or PARALLELRAG_INDEX) and --json.
    """


def _attach_sim() -> None:
    try:
        from .sim.cli import sim
    except ImportError:  # pragma: no cover - sim is part of the package
        return
    main.add_command(sim)


_attach_sim()


# --------------------------------------------------------------------------- shared options
def _expand_home(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``~`` at the start of an index folder means the home folder, also where no shell
    expanded it (``PARALLELRAG_INDEX=~/rag`` in an env file, ``--index=~/rag``). An empty
    value (``--index "$IDX"`` with IDX unset) is refused: it would mean the working directory."""
    if not value.strip():
        raise click.BadParameter("is empty (name the index folder, e.g. --index .parallelrag)")
    if value.startswith("~") and "://" not in value:
        return os.path.expanduser(value)
    return value


def _index_option(f: F) -> F:
    return click.option("--index", "index_dir", default=".parallelrag", metavar="DIR",
                        envvar="PARALLELRAG_INDEX", show_envvar=True, callback=_expand_home,
                        help="index folder, or a postgresql:// URL (see `parallelrag pg`)")(f)


def _json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="print one JSON document (schema in the CLI docs); library "
                             "warnings go into its 'warnings' list, not stderr")(f)


def _k_option(f: F) -> F:
    return click.option("-k", "--top-k", "k", type=click.IntRange(1, 10_000), default=5,
                        help="number of chunks to retrieve")(f)


def _mode_option(f: F) -> F:
    return click.option("--mode", type=click.Choice(["hybrid", "vector", "keyword"]),
                        default="hybrid",
                        help="hybrid: vector and BM25 scores fused; vector: cosine; "
                             "keyword: BM25")(f)


def _rank_option(f: F) -> F:
    return click.option("--rank-by", "rank_by", type=click.Choice(["document", "chunk"]),
                        default="document", show_default=True,
                        help="document: documents first, a document's further chunks pushed "
                             "down; chunk: plain score order")(f)


def _where_option(f: F) -> F:
    return click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
                        help="only chunks whose metadata KEY equals VALUE (repeatable, all must "
                             "match); 'source=GLOB' matches the document's source path. Other "
                             "VALUEs are JSON when they parse (5, true, null), else a string")(f)


def _parse_where(items: Sequence[str]) -> dict[str, Any] | None:
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="'--where'")
        value: Any = raw
        try:
            parsed = orjson.loads(raw) if key != "source" else raw  # source: always a glob
        except orjson.JSONDecodeError:
            parsed = raw
        if parsed is None or isinstance(parsed, str | int | float | bool):
            value = parsed
        if key in out and out[key] != value:
            raise click.BadParameter(f"{key} is given twice with different values",
                                     param_hint="'--where'")
        out[key] = value
    return out


def _question(value: str, what: str = "QUESTION") -> str:
    if not value.strip():
        raise click.UsageError(f"{what} is empty")
    return value


# --------------------------------------------------------------------------- providers
def _proxied(host: str, scheme: str) -> bool:
    proxies = urllib.request.getproxies()
    return bool(proxies.get(scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(
        host)


def check_reachable(base_url: str, timeout_s: float = 5.0) -> None:
    """Fail fast with one line when nothing listens at ``base_url`` (no HTTP sent).

    The clients retry connection errors with backoff (right for a provider that blips during a
    long run); before a command starts, a refused connection or an unknown host is a setting
    to fix, reported at once. Skipped when a proxy carries the requests.
    """
    parts = urlsplit(base_url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host or _proxied(host, parts.scheme):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise CliError(f"invalid base URL {base_url!r}: {exc}", EXIT_USAGE) from None
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        from .errors import ProviderConnectionError

        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ProviderConnectionError(f"cannot connect to {base_url}: {reason}") from None


def _spec_base_url(spec: str, explicit: str | None, env_names: Sequence[str],
                   default: str) -> str | None:
    """The base URL a one-string provider spec will talk to; None for local models."""
    if explicit:
        return explicit
    scheme, sep, _ = spec.partition(":")
    if not sep or scheme.lower() not in ("openai", "azure", "anthropic"):
        return None  # a local model, or a spec the client will reject with a clear message
    if "://" in spec:
        q = parse_qs(urlsplit(spec).query)
        for key in ("base_url", "endpoint"):
            if q.get(key):
                return q[key][-1]
    if scheme.lower() == "azure":
        return os.environ.get("AZURE_OPENAI_ENDPOINT") or None
    for name in env_names:
        if os.environ.get(name):
            return os.environ[name]
    return default


def _embedder(embed: str | None, base_url: str | None) -> Any:
    from .embeddings import EmbeddingClient

    if embed is None:
        if base_url:
            raise click.UsageError("--base-url needs --embed openai:MODEL")
        return None
    if base_url:
        if not embed.startswith("openai:") or "://" in embed:
            raise click.UsageError("--base-url goes with --embed openai:MODEL (an "
                                   "openai://MODEL?base_url=... spec carries its own)")
        url = base_url
        client = EmbeddingClient.openai(embed.split(":", 1)[1], base_url=base_url)
    else:
        try:
            client = EmbeddingClient.from_url(embed)
        except ValueError as exc:  # ConfigError is one too; urlsplit raises plain ones
            if isinstance(exc, ParallelRagError):
                raise
            raise CliError(f"invalid --embed {embed!r}: {exc}") from None
        url = _spec_base_url(embed, None, ["OPENAI_BASE_URL"], "https://api.openai.com/v1") or ""
    if url:
        check_reachable(url)
    return client


def _llm(llm: str | None, base_url: str | None) -> Any:
    if not llm:
        if base_url:
            raise click.UsageError("--base-url needs --llm PROVIDER:MODEL")
        return None
    from .llm import LlmClient

    scheme = llm.partition(":")[0].lower()
    env = ["ANTHROPIC_BASE_URL"] if scheme == "anthropic" else ["OPENAI_BASE_URL"]
    default = ("https://api.anthropic.com" if scheme == "anthropic"
               else "https://api.openai.com/v1")
    try:
        client = LlmClient.from_url(llm, **({"base_url": base_url} if base_url else {}))
    except ValueError as exc:
        if isinstance(exc, ParallelRagError):
            raise
        raise CliError(f"invalid --llm {llm!r}: {exc}") from None
    url = _spec_base_url(llm, base_url, env, default)
    if url:
        check_reachable(url)
    return client


def _is_url(index_dir: str) -> bool:
    return "://" in index_dir


def _saved_config(index_dir: str) -> dict[str, Any]:
    """How the index at ``index_dir`` was built (embedder spec, splitter settings), read without
    opening it; empty for a new index or a database URL."""
    if _is_url(index_dir):
        return {}
    from .store import EmbeddedStore

    try:
        cfg = EmbeddedStore.read_config(index_dir)
    except Exception:  # an unreadable store is reported when the index is opened
        cfg = None
    if cfg is None:
        try:
            cfg = orjson.loads((Path(index_dir) / "index.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            cfg = None
    return cfg if isinstance(cfg, dict) else {}


def _open_index(index_dir: str, *, embedder: Any = None, splitter: Any = None,
                create: bool = False, rebuild: bool = False, needs_provider: bool = True,
                writes: bool = False) -> Any:
    """Open the index; OS and SQLite errors while opening are configuration errors (exit 2).

    ``needs_provider``: the command will embed (a query, documents), so a saved remote embedder
    whose server does not answer fails fast here. ``writes`` (or ``create``): the command
    changes the index, so one that could only be opened read-only (read-only media) is refused
    here, before any work."""
    from .pipeline import Index

    spec = _saved_config(index_dir).get("embedder")
    if embedder is None and needs_provider and isinstance(spec, str):
        url = _spec_base_url(spec, None, ["OPENAI_BASE_URL"], "https://api.openai.com/v1")
        if url:
            check_reachable(url)
    try:
        index = Index.open(index_dir, embedder=embedder, splitter=splitter, create=create,
                           rebuild=rebuild)
    except (OSError, sqlite3.Error, StoreError) as exc:
        # the folder cannot be created, read or written, or holds no usable store: the index
        # setting is at fault (exit 2); provider errors while opening propagate (exit 1)
        raise OpeningError(index_dir, exc) from exc
    if (create or writes) and getattr(index.store, "read_only", False):
        index.close()
        raise OpeningError(index_dir, StoreError(
            "it is on read-only media (a read-only file system or a folder this user cannot "
            "write): it can be searched but not changed"))
    return index


def _no_hits_reason(index: Any, where: tuple[str, ...]) -> str:
    """Why a search found nothing, for the end of its line: an empty index, or the filters
    (a metadata key no chunk has gives no hits, not an error)."""
    try:
        chunks = index.store.stats().get("chunks")
    except Exception:  # the reason is a courtesy: the search itself succeeded
        chunks = None
    if chunks == 0:
        return ": the index is empty (add documents with `parallelrag ingest`)"
    if not where:
        return ""
    typed: list[str] = []  # values read as JSON numbers or booleans: metadata strings never equal them
    for item in where:
        key, _, raw = item.partition("=")
        value = (_parse_where([item]) or {}).get(key.strip())
        if key.strip() != "source" and isinstance(value, int | float):  # bool is an int
            typed.append(f"{item} compares a JSON {type(value).__name__}; for the string "
                         f"write --where '{key.strip()}=\"{raw}\"'")
    hint = "; ".join(typed) if typed else \
        "check the keys and values: `search --json` shows each hit's metadata"
    return " with " + " ".join(f"--where {w}" for w in where) + f" ({hint})"


def _splitter(index_dir: str, embedder: Any, chunk_size: int | None,
              chunk_overlap: int | None) -> Any:
    """The index's splitter (saved, or the embedder's default) with a new size and overlap."""
    if chunk_size is None and chunk_overlap is None:
        return None
    from .embeddings import EmbeddingClient
    from .pipeline.index import default_splitter, splitter_config, splitter_from_config

    saved = _saved_config(index_dir)
    base = saved.get("splitter") if embedder is None else None
    if not isinstance(base, dict):
        client = embedder or EmbeddingClient.from_url(str(saved.get("embedder") or "minilm"))
        base = splitter_config(default_splitter(client))
    size = chunk_size if chunk_size is not None else int(base.get("chunk_size", 1000))
    overlap = chunk_overlap if chunk_overlap is not None else min(size // 10, size - 1)
    if overlap >= size:
        raise click.BadParameter(f"{overlap} must be smaller than the chunk size ({size})",
                                 param_hint="'--chunk-overlap'")
    return splitter_from_config({**base, "chunk_size": size, "chunk_overlap": overlap})


# --------------------------------------------------------------------------- ingest
def _progress_every() -> float:
    """Seconds between progress lines when stderr is not a terminal (PARALLELRAG_PROGRESS_EVERY,
    default 10; 0 turns progress off)."""
    raw = os.environ.get("PARALLELRAG_PROGRESS_EVERY", "").strip()
    if not raw:
        return 10.0
    try:
        value = float(raw)
    except ValueError:
        raise CliError(f"PARALLELRAG_PROGRESS_EVERY must be a number of seconds, not {raw!r}") from None
    if value < 0 or value != value:
        raise CliError(f"PARALLELRAG_PROGRESS_EVERY must be >= 0, not {raw!r}")
    return value


@main.command(epilog="Exit code 1 when any document failed (listed); the others are indexed.")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_index_option
@click.option("--embed", default=None, envvar="PARALLELRAG_EMBED", show_envvar=True,
              metavar="SPEC",
              help="embedder of a new index: minilm | wordllama | openai:MODEL | "
                   "openai://MODEL?base_url=URL&dimensions=N&rpm=N&tpm=N | azure://DEPLOYMENT?"
                   "endpoint=URL  [default: minilm, or the one the index was built with]")
@click.option("--base-url", default=None, metavar="URL",
              help="OpenAI-compatible base URL for --embed openai:MODEL (else OPENAI_BASE_URL)")
@click.option("--chunk-size", type=click.IntRange(min=1), default=None,
              help="chunk size in the splitter's unit (minilm word pieces for minilm, "
                   "characters otherwise)  [default: 128 for minilm, 1500 otherwise]")
@click.option("--chunk-overlap", type=click.IntRange(min=0), default=None,
              help="overlap between neighbouring chunks, smaller than --chunk-size  "
                   "[default: a tenth of the chunk size]")
@click.option("--rechunk", is_flag=True,
              help="rebuild the index's chunks with the new splitter settings (re-splits and "
                   "re-embeds every file; embeddings of unchanged chunk texts come from the "
                   "cache)")
@click.option("--include", multiple=True, metavar="GLOB",
              help="only files matching GLOB (repeatable; '**' crosses folders)")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="skip files and folders matching GLOB (repeatable)")
@click.option("--text-field", default=None, metavar="KEY",
              help="JSON/JSONL key holding the text (dotted path); default: a 'text'-like key")
@click.option("--max-bytes", type=click.IntRange(min=1), default=50_000_000,
              help="skip files larger than this many bytes")
@click.option("--prune", is_flag=True,
              help="remove indexed documents whose files under PATHS are gone")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              help="local: this process (threads, both cores); ray: a Ray cluster "
                   "(needs the ray extra)")
@click.option("--ray-address", default=None, metavar="ADDR", envvar="RAY_ADDRESS",
              show_envvar=True,
              help="the Ray cluster for --engine ray ('auto', or the head's HOST:6379; not "
                   "ray:// Ray Client)  "
                   "[default: start Ray on this machine]")
@_json_option
@_debug_option
def ingest(paths: tuple[str, ...], index_dir: str, embed: str | None, base_url: str | None,
           chunk_size: int | None, chunk_overlap: int | None, rechunk: bool,
           include: tuple[str, ...], exclude: tuple[str, ...], text_field: str | None,
           max_bytes: int, prune: bool, engine: str, ray_address: str | None,
           as_json: bool) -> None:
    """Load, split, embed and index PATHS (files or folders). Incremental and resumable.

    Unchanged files are skipped; changed files are re-split and only their new chunks embedded.
    Files that were indexed but are gone stay searchable until --prune (the summary lists them).
    """
    ctx = click.get_current_context()
    for p in paths:  # with --prune a path that is gone is where files went (a deleted folder)
        if not prune and not os.path.lexists(p):
            raise click.BadParameter(f"Path {p!r} does not exist.", param_hint="'PATHS...'")
    extra: dict[str, Any] = {}
    if engine == "ray":
        from .distributed import require_ray

        # Ray first (a ConfigError naming the extra when it is missing): a C++ library loaded
        # before it while the index opens would break its start-up
        require_ray()
        extra["engine"] = "ray"
        if ray_address:
            os.environ["RAY_ADDRESS"] = ray_address  # read by the Ray engine when it connects
    elif ray_address and os.environ.get("RAY_ADDRESS") != ray_address:
        raise click.UsageError("--ray-address goes with --engine ray")
    with collect_warnings(quiet=as_json) as warned:
        emb = _embedder(embed, base_url)
        splitter = _splitter(index_dir, emb, chunk_size, chunk_overlap)
        with _open_index(index_dir, embedder=emb, splitter=splitter, create=True,
                         rebuild=rechunk) as index:
            total = count_files(paths, include or None, exclude or None, max_bytes,
                                index.path)
            every = _progress_every()
            with IngestView(total, index.embedder, enabled=not as_json and every > 0,
                            live=sys.stderr.isatty(), plain_every_s=every) as view:
                report = index.ingest(list(paths), progress=view.on_progress,
                                      include=include or None, exclude=exclude or None,
                                      prune=prune, text_field=text_field, max_bytes=max_bytes,
                                      **extra)
            missing = [] if prune else cli_json.missing_sources(index, report, paths)
    doc = cli_json.ingest_json(index_dir, report, missing, warned.messages)
    if as_json:
        echo_json(doc)
    else:
        for line in cli_json.ingest_lines(index_dir, doc):
            echo(line)
    if doc["failed"]:
        ctx.exit(EXIT_FAILURE)


# --------------------------------------------------------------------------- search / query
@main.command(epilog="Score: see `parallelrag --help` (hybrid = fused vector and BM25 scores).")
@click.argument("question")
@_index_option
@_k_option
@_mode_option
@_rank_option
@_where_option
@_json_option
@_debug_option
def search(question: str, index_dir: str, k: int, mode: str, rank_by: str,
           where: tuple[str, ...], as_json: bool) -> None:
    """Print the K chunks that best match QUESTION, best first."""
    _question(question)
    flt = _parse_where(where)
    with (collect_warnings(quiet=as_json) as warned,
          _open_index(index_dir, needs_provider=mode != "keyword") as index):
        hits = index.search(question, k=k, mode=mode, where=flt, rank_by=rank_by)
        why = "" if hits or as_json else _no_hits_reason(index, where)
    if as_json:
        echo_json(cli_json.search_json(index_dir, question, mode, k, flt, hits, warned.messages))
        return
    for line in cli_json.search_lines(question, mode, hits, why):
        echo(line)


@main.command(epilog="Without --llm the answer is extractive: the best passages, numbered.")
@click.argument("question")
@_index_option
@_k_option
@_mode_option
@_rank_option
@_where_option
@click.option("--llm", default=None, envvar="PARALLELRAG_LLM", show_envvar=True,
              metavar="SPEC",
              help="openai:MODEL | anthropic:MODEL | openai://MODEL?base_url=URL | "
                   "azure://DEPLOYMENT?endpoint=URL  [default: none, an extractive answer]")
@click.option("--base-url", default=None, metavar="URL",
              help="base URL of the LLM provider (else OPENAI_BASE_URL / ANTHROPIC_BASE_URL)")
@_json_option
@_debug_option
def query(question: str, index_dir: str, k: int, mode: str, rank_by: str,
          where: tuple[str, ...], llm: str | None, base_url: str | None, as_json: bool) -> None:
    """Answer QUESTION from the index: the answer (streamed), then its numbered sources."""
    _question(question)
    flt = _parse_where(where)
    with collect_warnings(quiet=as_json) as warned:
        client = _llm(llm, base_url)
        with _open_index(index_dir) as index:
            index.rank_by = rank_by
            if as_json:
                ans = index.answer(question, llm=client, k=k, mode=mode, where=flt)
            else:
                if client is None:
                    echo("(no --llm given: the best passages, numbered)", err=True)
                stream = index.stream_answer(question, llm=client, k=k, mode=mode, where=flt)
                for delta in stream:
                    click.echo(delta, nl=False)
                    sys.stdout.flush()
                echo()
                ans = stream.answer
    if as_json:
        echo_json(cli_json.query_json(index_dir, question, mode, k, flt, ans, warned.messages))
        return
    if ans is not None:
        _echo_sources(ans.citations)


def _echo_sources(citations: Sequence[Any]) -> None:
    """The numbered sources under an answer (nothing when there are none)."""
    if not citations:
        return
    echo()
    echo("Sources:")
    for c in citations:
        echo(f"  [{c.number}] {c.source} (chars {c.start}-{c.end})")


# --------------------------------------------------------------------------- admin
@main.command()
@_index_option
@_json_option
@_debug_option
def stats(index_dir: str, as_json: bool) -> None:
    """Show what the index holds: documents, chunks, embedder, splitter, size on disk."""
    with (collect_warnings(quiet=as_json) as warned,
          _open_index(index_dir, needs_provider=False) as index):
        s = index.stats()
    doc = cli_json.stats_json(index_dir, s, warned.messages)
    if as_json:
        echo_json(doc)
        return
    for line in cli_json.stats_lines(doc):
        echo(line)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@_index_option
@_json_option
@_debug_option
def remove(sources: tuple[str, ...], index_dir: str, as_json: bool) -> None:
    """Remove documents (and their chunks) from the index by SOURCE.

    SOURCE is a document's source as `search` shows it; a file's path also removes the records
    a JSON/JSONL file was split into (PATH#0, PATH#1, ...). The files themselves are untouched.
    Exit code 1 when a SOURCE matched nothing (listed).
    """
    ctx = click.get_current_context()
    with (collect_warnings(quiet=as_json) as warned,
          _open_index(index_dir, needs_provider=False, writes=True) as index):
        removed, not_found = cli_json.remove_sources(index, sources)
    doc = cli_json.remove_json(index_dir, removed, not_found, warned.messages)
    if as_json:
        echo_json(doc)
    else:
        for s in removed:
            echo(f"removed {s}")
        for s in not_found:
            echo(f"not in the index: {s}")
        echo(f"{len(removed)} documents removed from {hide_credentials(index_dir)}")
    if not_found:
        ctx.exit(EXIT_FAILURE)


# --------------------------------------------------------------------------- demos
@main.command("demo-embed")
@click.option("--texts", type=click.IntRange(min=1), default=5000, help="texts to embed")
@click.option("--latency", type=click.FloatRange(min=0), default=0.1,
              help="simulated provider latency (s)")
@_debug_option
def demo_embed(texts: int, latency: float) -> None:
    """Start the simulated provider and embed texts in parallel, then embed locally (offline)."""
    import numpy as np

    from .embeddings import EmbeddingClient
    from .sim import SimConfig, SimProcess, sim_embedding

    data = [f"sentence {i}: parallel retrieval-augmented generation" for i in range(texts)]
    proc = SimProcess(SimConfig(latency=latency, rpm=30_000, tpm=5_000_000)).start()
    try:
        emb = EmbeddingClient.openai("text-embedding-3-small", base_url=proc.url,
                                     api_key="sk-demo", dimensions=256, batch_size=100)
        t0 = time.perf_counter()
        rows = emb.embed_many(data)
        wall = time.perf_counter() - t0
        ok = all(
            np.allclose(rows[i], sim_embedding("text-embedding-3-small", data[i], 256), atol=1e-6)
            for i in range(0, texts, max(1, texts // 50))
        )
        sequential = (texts / 100) * latency
        st = proc.stats()
    finally:
        proc.stop()
    echo("parallel embedding against the simulated provider")
    echo(f"  texts {texts}, requests {st['requests']}, latency {latency * 1000:.0f} ms, "
         f"max in flight {st['max_in_flight']}")
    echo(f"  wall {wall:.2f} s; one request at a time would take {sequential:.1f} s "
         f"({sequential / wall:.1f}x); rows verified: {'yes' if ok else 'NO'}")
    local = EmbeddingClient.local("minilm")
    t0 = time.perf_counter()
    vecs = local.embed_many(data[:500])
    echo(f"local minilm: {len(vecs)} texts -> {vecs.shape} in "
         f"{time.perf_counter() - t0:.2f} s (offline)")


@main.command()
@click.option("--index", "index_dir", default=".parallelrag-demo", metavar="DIR",
              help="index folder of the demo")
@click.option("--question", default="How does parallelrag wait for I/O without holding the GIL?",
              help="the question to answer")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@_debug_option
def demo(index_dir: str, question: str, paths: tuple[str, ...]) -> None:
    """The main job on the embedded default: ingest the project's docs, then answer a question.

    Offline: the local minilm model and the embedded store. PATHS default to README.md and docs/.
    """
    sources = list(paths) or [p for p in ("README.md", "docs") if Path(p).exists()]
    if not sources:
        raise CliError("no sample corpus found: run from the repository root or pass PATHS")
    echo(f"1. ingest {', '.join(sources)} -> {index_dir} (local minilm, embedded store)")
    t0 = time.perf_counter()
    with _open_index(index_dir, embedder="minilm", create=True) as index:
        report = index.ingest(sources)
        echo(f"   {report.documents} documents ({report.added} added, {report.updated} "
             f"updated, {report.unchanged} unchanged), {report.chunks} chunks written, "
             f"{report.embedded} embedded, in {report.wall_s:.1f} s "
             f"(model load included: {time.perf_counter() - t0:.1f} s total)")
        echo(f"2. query: {question}")
        stream = index.stream_answer(question, llm=None, k=3)
        for delta in stream:
            echo(delta)
        if stream.answer is not None:
            _echo_sources(stream.answer.citations)
    echo("An LLM writes the answer with `parallelrag query ... --llm openai:MODEL`.")


def _attach_optional() -> None:
    """Commands whose functions live in optional modules (attached when those exist)."""
    from . import cli_extra

    cli_extra.attach(main)


_attach_optional()


def run() -> None:  # pragma: no cover - the console entry point of `python -m parallelrag`
    main()
