"""Nested sync calls never hang: user code that blocks on parallelrag work (sync tools calling
``embed``, ``complete``, ``index.search`` and a nested workflow; progress callbacks calling sync
clients) never waits on a bounded pool that the awaited work needs too.

Each scenario runs in a child process (killed with its process group after a bound), so a
deadlock fails the test instead of hanging the suite. 256 concurrent calls: four times the
runtime's 64 worker threads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proc_helpers import run_script

SCRIPT = r'''
import asyncio, sys, time
from pathlib import Path

from parallelrag.embeddings import EmbeddingClient
from parallelrag.llm import LlmClient
from parallelrag.pipeline import Index
from parallelrag.sim import SimConfig, SimServer
from parallelrag.tools import tool
from parallelrag.workflow import Node, Workflow


def directive(name, **args):
    import json
    return f"[[tool:{name} {json.dumps(args)}]]"


mode, tmp = sys.argv[1], Path(sys.argv[2])
N = 256
srv = SimServer(SimConfig(latency=0.0))
srv.start()
emb = EmbeddingClient.openai("text-embedding-3-small", base_url=srv.url, api_key="sk-test",
                             dimensions=8)
llm = LlmClient.openai("gpt-sim", base_url=srv.url, api_key="sk-test")

docs = tmp / "docs"
docs.mkdir()
(docs / "rockets.txt").write_text("Rockets burn liquid oxygen and kerosene to reach orbit.\n")
(docs / "bread.txt").write_text("Bread is baked from flour, water, yeast and salt.\n")
index = Index.open(tmp / "idx", embedder=EmbeddingClient.local("wordllama"))
index.ingest(docs)


@tool
def shout(text: str) -> str:
    """Upper-case text."""
    return text.upper()


inner = Workflow("inner")
inner.add(Node.agent("i", prompt="{input}", llm=llm, tools=[shout]))


def everything(topic: str) -> str:
    vec = emb.embed(topic)
    reply = llm.complete("ECHO:" + topic)
    hits = index.search("kerosene orbit", k=1)
    nested = inner.run(input=directive("shout", text=topic), timeout_s=120)
    nested.raise_for_errors()
    assert "kerosene" in hits[0].text
    return f"{topic}:{len(vec)}:{reply}:{nested.outputs['i']}"


@tool
def research(topic: str) -> str:
    """Embed, complete, search and run a nested workflow: blocking clients inside a tool."""
    return everything(topic)


t0 = time.perf_counter()
if mode == "ainvoke":
    async def main():
        return await asyncio.gather(*(research.ainvoke({"topic": f"t{i}"}) for i in range(N)))
    outs = asyncio.run(main())
    assert outs == [f"t{i}:8:t{i}:final: T{i}" for i in range(N)], outs[:3]
elif mode == "workflow":
    wf = Workflow("outer")
    wf.add(Node.agent("o", prompt="{input}", llm=llm, tools=[research]))
    prompt = "".join(directive("research", topic=f"t{i}") for i in range(N))
    result = wf.run(input=prompt, timeout_s=300)
    assert result.ok, result.failed
    calls = [e for e in result.trace if e.kind == "tool_call"]
    assert len(calls) == N and all(e.data["ok"] for e in calls), [
        e.data for e in calls if not e.data["ok"]][:3]
elif mode == "progress":
    more = tmp / "more"
    more.mkdir()
    for i in range(40):
        (more / f"d{i}.txt").write_text(f"Document {i} about topic {i}.\n" * 20)
    index2 = Index.open(tmp / "idx2", embedder=EmbeddingClient.local("wordllama"))
    results, errors = [], []

    def progress(p):
        try:
            results.append(everything(f"p{len(results)}"))
        except BaseException as e:
            errors.append(repr(e))

    report = index2.ingest(more, progress=progress)
    assert report.documents == 40, report
    assert not errors, errors[:3]
    assert results, "the progress callback never ran"
else:
    raise SystemExit(f"unknown mode {mode}")
print("OK", mode, round(time.perf_counter() - t0, 2))
'''


@pytest.mark.parametrize("mode", ["ainvoke", "workflow"])
def test_256_concurrent_sync_tools_calling_clients_index_and_nested_workflows(
    mode: str, tmp_path: Path
) -> None:
    ran = run_script(SCRIPT, mode, str(tmp_path), timeout=240)
    assert ran.rc is not None, f"hung ({mode}); stderr tail: {ran.err[-2000:]}"
    assert ran.rc == 0, ran.err[-4000:]
    assert ran.out.startswith(f"OK {mode}")


def test_progress_callbacks_calling_sync_clients(tmp_path: Path) -> None:
    ran = run_script(SCRIPT, "progress", str(tmp_path), timeout=240)
    assert ran.rc is not None, f"hung; stderr tail: {ran.err[-2000:]}"
    assert ran.rc == 0, ran.err[-4000:]
    assert ran.out.startswith("OK progress")
