"""The ``parallelrag`` command."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

console = Console(stderr=False)
err_console = Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="parallelrag")
def main() -> None:
    """parallelrag: parallel, GIL-free retrieval-augmented generation."""


def _attach_sim() -> None:
    try:
        from .sim.cli import sim
    except ImportError:  # pragma: no cover - sim is part of the package
        return
    main.add_command(sim)


_attach_sim()


@main.command("demo-embed")
@click.option("--texts", default=5000, show_default=True, help="texts to embed")
@click.option("--latency", default=0.1, show_default=True, help="simulated provider latency (s)")
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
        stats = proc.stats()
    finally:
        proc.stop()
    table = Table(title="parallel embedding against the simulated provider")
    for col in ("texts", "requests", "latency", "wall", "sequential would take", "speed-up",
                "max in flight", "rows verified"):
        table.add_column(col)
    table.add_row(str(texts), str(stats["requests"]), f"{latency * 1000:.0f} ms",
                  f"{wall:.2f} s", f"{sequential:.1f} s", f"{sequential / wall:.1f}×",
                  str(stats["max_in_flight"]), "yes" if ok else "NO")
    console.print(table)
    local = EmbeddingClient.local("minilm")
    t0 = time.perf_counter()
    vecs = local.embed_many(data[:500])
    console.print(f"local minilm: {len(vecs)} texts → {vecs.shape} in "
                  f"{time.perf_counter() - t0:.2f} s (offline)")


# --------------------------------------------------------------------------- the main job
INDEX_OPT = click.option("--index", "index_dir", default=".parallelrag", show_default=True,
                         envvar="PARALLELRAG_INDEX", help="index directory")


def _embedder_from_opts(embed: str | None, base_url: str | None) -> Any:
    from .embeddings import EmbeddingClient

    if embed is None:
        return None
    if base_url and embed.startswith("openai:") and "://" not in embed:
        return EmbeddingClient.openai(embed.split(":", 1)[1], base_url=base_url)
    return EmbeddingClient.from_url(embed)


def _llm_from_opts(llm: str | None, base_url: str | None) -> Any:
    if not llm:
        return None
    from .llm import LlmClient

    kw: dict[str, Any] = {}
    if base_url:
        kw["base_url"] = base_url
    return LlmClient.from_url(llm, **kw)


def _fail(msg: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/red] {msg}")
    sys.exit(code)


def _open_index(index_dir: str, embed: str | None = None, base_url: str | None = None,
                create: bool = False, splitter: Any = None) -> Any:
    from .errors import ParallelRagError
    from .pipeline import Index

    try:
        return Index.open(index_dir, embedder=_embedder_from_opts(embed, base_url),
                          splitter=splitter, create=create)
    except ParallelRagError as exc:
        _fail(str(exc))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@INDEX_OPT
@click.option("--embed", default=None, help="minilm | wordllama | openai:MODEL | openai://...")
@click.option("--base-url", default=None, help="OpenAI-compatible base URL for --embed openai:")
@click.option("--chunk-size", type=int, default=None, help="chunk size (splitter's unit)")
@click.option("--chunk-overlap", type=int, default=None)
@click.option("--include", multiple=True, help="glob of files to include (repeatable)")
@click.option("--exclude", multiple=True, help="glob of files to exclude (repeatable)")
@click.option("--text-field", default=None, help="JSON/JSONL key holding the text")
@click.option("--max-bytes", type=int, default=50_000_000, show_default=True)
@click.option("--prune", is_flag=True, help="remove documents whose files are gone")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def ingest(paths: tuple[str, ...], index_dir: str, embed: str | None, base_url: str | None,
           chunk_size: int | None, chunk_overlap: int | None, include: tuple[str, ...],
           exclude: tuple[str, ...], text_field: str | None, max_bytes: int, prune: bool,
           as_json: bool) -> None:
    """Load, split, embed and index PATHS (files or directories). Incremental and resumable."""
    import orjson
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    splitter = None
    if chunk_size is not None or chunk_overlap is not None:
        from .splitters import RecursiveSplitter

        size = chunk_size or 1000
        splitter = RecursiveSplitter(chunk_size=size,
                                     chunk_overlap=chunk_overlap if chunk_overlap is not None
                                     else min(size // 10, size - 1))
    index = _open_index(index_dir, embed, base_url, create=True, splitter=splitter)
    progress = Progress(
        SpinnerColumn(), TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(),
        TextColumn("docs · {task.fields[chunks]} chunks · {task.fields[eps]:.0f} emb/s"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console,
        disable=as_json or not err_console.is_terminal, transient=False,
    )
    with progress:
        task = progress.add_task("ingest", total=None, chunks=0, eps=0.0)

        def on_progress(p: Any) -> None:
            progress.update(task, completed=p.documents_done, total=p.files_total,
                            chunks=p.chunks, eps=p.embeddings_per_s)

        report = index.ingest(list(paths), progress=on_progress, include=include or None,
                              exclude=exclude or None, prune=prune, text_field=text_field,
                              max_bytes=max_bytes)
    index.close()
    if as_json:
        console.print_json(orjson.dumps(report.as_dict()).decode())
    else:
        t = Table(title=f"ingest into {index_dir}")
        for col in ("added", "updated", "unchanged", "removed", "skipped", "failed", "chunks",
                    "embedded", "requests", "retries", "429s", "wall"):
            t.add_column(col, justify="right")
        t.add_row(*(str(x) for x in (
            report.added, report.updated, report.unchanged, report.removed, len(report.skipped),
            len(report.failed), report.chunks, report.embedded, report.requests, report.retries,
            report.rate_limited)), f"{report.wall_s:.1f} s")
        console.print(t)
        for path, reason in report.skipped:
            console.print(f"  [yellow]skipped[/yellow] {path}: {reason}")
        for src, reason in report.failed:
            console.print(f"  [red]failed[/red] {src}: {reason}")
    if report.failed:
        sys.exit(1)


def _hits_json(hits: list[Any]) -> list[dict[str, Any]]:
    return [{"source": h.source, "score": h.score, "start": h.start, "end": h.end,
             "chunk_id": h.chunk_id, "text": h.text, "metadata": h.metadata} for h in hits]


@main.command()
@click.argument("question")
@INDEX_OPT
@click.option("-k", default=5, show_default=True)
@click.option("--mode", type=click.Choice(["hybrid", "vector", "keyword"]), default="hybrid",
              show_default=True)
@click.option("--json", "as_json", is_flag=True)
def search(question: str, index_dir: str, k: int, mode: str, as_json: bool) -> None:
    """Print the chunks that best match QUESTION."""
    import orjson

    index = _open_index(index_dir)
    hits = index.search(question, k=k, mode=mode)
    if as_json:
        console.print_json(orjson.dumps(_hits_json(hits)).decode())
        return
    for i, h in enumerate(hits, 1):
        console.print(f"[bold][{i}][/bold] {h.source}:{h.start}-{h.end}  score {h.score:.3f}")
        console.print("    " + h.text.strip().replace("\n", " ")[:300])


@main.command()
@click.argument("question")
@INDEX_OPT
@click.option("-k", default=5, show_default=True)
@click.option("--llm", default=None, envvar="PARALLELRAG_LLM",
              help="openai:MODEL | anthropic:MODEL (default: an extractive answer)")
@click.option("--base-url", default=None, help="base URL for the LLM provider")
@click.option("--json", "as_json", is_flag=True)
def query(question: str, index_dir: str, k: int, llm: str | None, base_url: str | None,
          as_json: bool) -> None:
    """Answer QUESTION from the index, streaming the answer, then its numbered sources."""
    import orjson

    index = _open_index(index_dir)
    client = _llm_from_opts(llm, base_url)
    if as_json:
        ans = index.answer(question, llm=client, k=k)
        console.print_json(orjson.dumps({
            "question": ans.question, "answer": ans.text, "extractive": ans.extractive,
            "citations": [{"number": c.number, "source": c.source, "start": c.start,
                           "end": c.end} for c in ans.citations],
            "usage": ans.usage,
        }).decode())
        return
    stream = index.stream_answer(question, llm=client, k=k)
    if client is None:
        console.print("[dim]No LLM configured (--llm openai:MODEL or anthropic:MODEL): "
                      "showing the best passages.[/dim]")
    for delta in stream:
        console.print(delta, end="", soft_wrap=True, highlight=False, markup=False)
    console.print()
    ans = stream.answer
    if ans is not None and ans.citations:
        console.print("\n[bold]Sources[/bold]")
        for c in ans.citations:
            console.print(f"  [{c.number}] {c.source} (chars {c.start}-{c.end})", markup=False)


@main.command()
@INDEX_OPT
@click.option("--json", "as_json", is_flag=True)
def stats(index_dir: str, as_json: bool) -> None:
    """Show what the index holds."""
    import orjson

    index = _open_index(index_dir)
    s = index.stats()
    if as_json:
        console.print_json(orjson.dumps(s, default=str).decode())
        return
    t = Table(title=f"index {index_dir}")
    t.add_column("key")
    t.add_column("value")
    for key, value in s.items():
        t.add_row(str(key), str(value))
    console.print(t)


@main.command()
@click.option("--index", "index_dir", default=".parallelrag-demo", show_default=True)
@click.option("--question", default="How does parallelrag wait for I/O without holding the GIL?",
              show_default=True)
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
def demo(index_dir: str, question: str, paths: tuple[str, ...]) -> None:
    """The main job on the embedded default: ingest the project's docs, then answer a question.

    Offline: the local minilm model and the embedded store. PATHS default to README.md and docs/.
    """
    from pathlib import Path

    from .pipeline import Index

    sources = list(paths) or [p for p in ("README.md", "docs") if Path(p).exists()]
    if not sources:
        _fail("no sample corpus found: run from the repository root or pass PATHS")
    console.print(f"[bold]1. ingest[/bold] {', '.join(sources)} → {index_dir} "
                  "(local minilm, embedded store)")
    t0 = time.perf_counter()
    index = Index.open(index_dir, embedder="minilm")
    report = index.ingest(sources)
    console.print(f"   {report.documents} documents ({report.added} added, {report.updated} "
                  f"updated, {report.unchanged} unchanged), {report.chunks} chunks written, "
                  f"{report.embedded} embedded, in {report.wall_s:.1f} s "
                  f"(model load included: {time.perf_counter() - t0:.1f} s total)")
    console.print(f"[bold]2. query[/bold] {question}")
    stream = index.stream_answer(question, llm=None, k=3)
    for delta in stream:
        console.print(delta, markup=False, highlight=False)
    ans = stream.answer
    if ans is not None:
        console.print("\n[bold]Sources[/bold]")
        for c in ans.citations:
            console.print(f"  [{c.number}] {c.source} (chars {c.start}-{c.end})", markup=False)
    console.print("[dim]An LLM writes the answer with `parallelrag query ... --llm "
                  "openai:MODEL`.[/dim]")
    index.close()


def run() -> None:  # pragma: no cover
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)



