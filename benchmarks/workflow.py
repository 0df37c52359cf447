# mypy: disable-error-code="import-untyped,import-not-found,unused-ignore"
"""Workflow engines side by side: parallelrag vs GraphBit 0.6.8 vs LangGraph, on the sim LLM.

GraphBit's benchmark scenarios, as workflow graphs of LLM agents:

* simple: 1 agent;
* sequential: 5 agents in a chain (each reads the previous output);
* parallel: 8 independent agents;
* complex: 10 nodes, fan-out / fan-in (plan → 4 research → 2 synth → review → final → format).

Every (framework, scenario) runs in its own subprocess (fresh interpreter: peak RSS and CPU are
that framework's), against the same sim server in another process (100 ms per request by
default). Each subprocess builds the workflow, runs it once to warm up, then ``--reps`` times;
we report the median wall time of a run, CPU seconds per run (user + system of the subprocess)
and the subprocess's peak RSS. ``in flight`` is the most concurrent requests the sim saw.

Plus GraphBit issue #287: an agent tool that calls a sync client (embed / complete) inside
``Executor.execute`` aborts GraphBit's interpreter; the same workflow in parallelrag completes.

Run (peers live in the benchmark venv)::

    .bench-venv/bin/python benchmarks/workflow.py            # writes docs/benchmarks-workflow.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import os
import platform
import resource
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
API_KEY = "sk-local-benchmark-0000000000"
MODEL = "gpt-4o-mini"

# --------------------------------------------------------------------------- scenarios
# name -> list of (node, task, upstream nodes)
Scenario = list[tuple[str, str, list[str]]]


def scenarios() -> dict[str, Scenario]:
    topics = ["databases", "compilers", "networks", "operating systems",
              "graphics", "cryptography", "storage", "scheduling"]
    seq_tasks = ["Outline an article on caching", "Expand the outline into sections",
                 "Write the introduction", "Add examples to each section", "Write a conclusion"]
    complex_: Scenario = [("plan", "Plan a report on distributed systems", [])]
    for i in range(4):
        complex_.append((f"research_{i}", f"Research aspect {i} of the plan", ["plan"]))
    complex_.append(("synth_0", "Synthesize the first two findings", ["research_0", "research_1"]))
    complex_.append(("synth_1", "Synthesize the last two findings", ["research_2", "research_3"]))
    complex_.append(("review", "Review both syntheses", ["synth_0", "synth_1"]))
    complex_.append(("final", "Write the final report", ["review"]))
    complex_.append(("format", "Format the report as markdown", ["final"]))
    return {
        "simple": [("answer", "Explain what a vector database is in two sentences", [])],
        "sequential": [
            (f"step_{i}", task, [f"step_{i - 1}"] if i else []) for i, task in enumerate(seq_tasks)
        ],
        "parallel": [(f"task_{i}", f"Summarize the state of {t}", []) for i, t in enumerate(topics)],
        "complex": complex_,
    }


# --------------------------------------------------------------------------- builders
class LangGraphState(TypedDict):
    outputs: Annotated[dict[str, str], operator.or_]


def build_parallelrag(url: str, sc: Scenario) -> Callable[[], int]:
    from parallelrag.llm import LlmClient
    from parallelrag.workflow import Node, Workflow

    llm = LlmClient.openai(MODEL, base_url=url, api_key=API_KEY)
    wf = Workflow("bench")
    for name, task, deps in sc:
        context = "".join(f"\n{d}: {{{d}}}" for d in deps)
        wf.add(Node.agent(name, prompt=task + context, llm=llm))
    for name, _, deps in sc:
        for d in deps:
            wf.connect(d, name)
    wf.validate()

    def run() -> int:
        r = wf.run(input=None)
        r.raise_for_errors()
        return sum(1 for v in r.outputs.values() if v)

    return run


def build_graphbit(url: str, sc: Scenario) -> Callable[[], int]:
    import graphbit

    sys.path.insert(0, str(HERE))
    import peers

    cfg = peers.graphbit_llm_config(url, model=MODEL, api_key=API_KEY)
    wf = graphbit.Workflow("bench")
    ids: dict[str, Any] = {}
    for name, task, _ in sc:
        # GraphBit passes the outputs of parent nodes into an agent's prompt by itself
        ids[name] = wf.add_node(graphbit.Node.agent(name=name, prompt=task, llm_config=cfg))
    for name, _, deps in sc:
        for d in deps:
            wf.connect(ids[d], ids[name])
    wf.validate()
    executor = graphbit.Executor(cfg, timeout_seconds=120)

    def run() -> int:
        r = executor.execute(wf)
        if not r.is_success():
            raise RuntimeError(f"graphbit run failed: {r.state()}")
        return sum(1 for name, _, _ in sc if r.get_node_output(name))

    return run


def build_langgraph(url: str, sc: Scenario) -> Callable[[], int]:
    from langchain_openai import ChatOpenAI
    from langgraph.graph import END, START, StateGraph
    from pydantic import SecretStr

    llm = ChatOpenAI(model=MODEL, base_url=url, api_key=SecretStr(API_KEY), max_retries=0)

    def make(name: str, task: str, deps: list[str]) -> Any:
        async def node(state: LangGraphState) -> dict[str, dict[str, str]]:
            context = "".join(f"\n{d}: {state['outputs'].get(d, '')}" for d in deps)
            msg = await llm.ainvoke(task + context)
            return {"outputs": {name: str(msg.content)}}

        return node

    g = StateGraph(LangGraphState)
    downstream: set[str] = set()
    for name, task, deps in sc:
        g.add_node(name, make(name, task, deps))
        downstream.update(deps)
    for name, _, deps in sc:
        if not deps:
            g.add_edge(START, name)
        elif len(deps) == 1:
            g.add_edge(deps[0], name)
        else:
            g.add_edge(deps, name)  # fan-in: waits for every dep
    for name, _, _ in sc:
        if name not in downstream:
            g.add_edge(name, END)
    app = g.compile()
    # one loop for every run: langchain-openai caches its async HTTP client per loop
    loop = asyncio.new_event_loop()

    def run() -> int:
        out = loop.run_until_complete(app.ainvoke({"outputs": {}}))
        return sum(1 for v in out["outputs"].values() if v)

    return run


BUILDERS = {"parallelrag": build_parallelrag, "graphbit": build_graphbit,
            "langgraph": build_langgraph}


def worker(framework: str, scenario: str, url: str, reps: int) -> dict[str, Any]:
    """Runs in a fresh subprocess: build, warm up, time ``reps`` runs."""
    sc = scenarios()[scenario]
    t0 = time.perf_counter()
    run = BUILDERS[framework](url, sc)
    setup_s = time.perf_counter() - t0
    produced = run()  # warm-up (connections, lazy imports)
    walls: list[float] = []
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(reps):
        t = time.perf_counter()
        produced = run()
        walls.append(time.perf_counter() - t)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "wall_s": statistics.median(walls),
        "wall_min_s": min(walls),
        "cpu_s": cpu / reps,
        "peak_rss_mb": ru1.ru_maxrss / 1024,
        "setup_s": setup_s,
        "outputs": produced,
        "nodes": len(sc),
    }


# --------------------------------------------------------------------------- issue #287
_PARALLELRAG_287 = textwrap.dedent(
    """
    import sys
    from parallelrag.embeddings import EmbeddingClient
    from parallelrag.llm import LlmClient
    from parallelrag.tools import tool
    from parallelrag.workflow import Node, Workflow
    url, which = sys.argv[1], sys.argv[2]
    emb = EmbeddingClient.openai("text-embedding-3-small", base_url=url, api_key="sk-bench")
    llm = LlmClient.openai("gpt-4o-mini", base_url=url, api_key="sk-bench")

    @tool
    def work(text: str) -> str:
        "Embed or complete a text"
        if which == "embed":
            return "dim=%d" % len(emb.embed(text))
        if which == "complete":
            return llm.complete(text)
        return text.upper()

    wf = Workflow("issue287")
    wf.add(Node.agent("entry", prompt='[[tool:work {{"text": "hello"}}]] call the tool',
                      llm=llm, tools=[work]))
    r = wf.run()
    print("RESULT", r.ok, r.outputs.get("entry"))
    """
)


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _crash_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for key in ("Cannot start a runtime", "panicked", "Error"):
        for ln in lines:
            if key in ln:
                return ln
    return lines[-1] if lines else ""


def issue_287(url: str) -> list[dict[str, Any]]:
    sys.path.insert(0, str(HERE))
    import peers

    rows: list[dict[str, Any]] = []
    for which in ("embed", "complete"):
        try:
            gb = peers.graphbit_issue_287(url, which)
            gb_rc: int | str = gb.returncode
            gb_out = (_last(gb.stdout) if gb.returncode == 0
                      else _crash_line(gb.stderr_tail) or _last(gb.stdout))
        except Exception as e:  # report whatever happened
            gb_rc, gb_out = "n/a", f"{type(e).__name__}: {e}"
        proc = subprocess.run([sys.executable, "-c", _PARALLELRAG_287, url, which],
                              capture_output=True, text=True, timeout=120)
        pr_out = _last(proc.stdout) if proc.returncode == 0 else _crash_line(proc.stderr)
        rows.append({"tool calls": which, "graphbit_rc": gb_rc, "graphbit": gb_out,
                     "parallelrag_rc": proc.returncode, "parallelrag": pr_out})
    return rows


# --------------------------------------------------------------------------- driver
def _fmt(x: float, unit: str = "") -> str:
    return f"{x:.3f}{unit}" if x < 10 else f"{x:.1f}{unit}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", nargs=2, metavar=("FRAMEWORK", "SCENARIO"))
    ap.add_argument("--url")
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--frameworks", default="parallelrag,graphbit,langgraph")
    ap.add_argument("--scenarios", default="simple,sequential,parallel,complex")
    ap.add_argument("--out", default="",
                    help="also write the tables to this Markdown file (docs/ pages are curated)")
    ap.add_argument("--no-287", action="store_true")
    args = ap.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.url, args.reps)))
        return

    from parallelrag.sim import SimConfig, SimProcess

    sim = SimProcess(SimConfig(latency=args.latency)).start()
    results: list[dict[str, Any]] = []
    try:
        for scenario in args.scenarios.split(","):
            for fw in args.frameworks.split(","):
                sim.reset_stats()
                cmd = [sys.executable, __file__, "--worker", fw, scenario, "--url", sim.url,
                       "--reps", str(args.reps)]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"})
                row: dict[str, Any] = {"framework": fw, "scenario": scenario}
                if proc.returncode == 0:
                    row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
                    row["in_flight"] = sim.stats()["max_in_flight"]
                else:
                    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                    row["error"] = f"exit {proc.returncode}: {tail[:160]}"
                results.append(row)
                print(_row_text(row), flush=True)
        crash = [] if args.no_287 else issue_287(sim.url)
    finally:
        sim.stop()

    md = _markdown(results, crash, args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(md)
    print()
    print(md)


def _row_text(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['scenario']:<11} {r['framework']:<12} ERROR {r['error']}"
    return (f"{r['scenario']:<11} {r['framework']:<12} wall {r['wall_s']:.3f}s  cpu "
            f"{r['cpu_s']:.3f}s  rss {r['peak_rss_mb']:.0f} MB  in flight {r['in_flight']}  "
            f"outputs {r['outputs']}/{r['nodes']}")


def _markdown(results: list[dict[str, Any]], crash: list[dict[str, Any]],
              args: argparse.Namespace) -> str:
    from importlib.metadata import PackageNotFoundError, version

    def ver(p: str) -> str:
        try:
            return version(p)
        except PackageNotFoundError:
            return "not installed"

    lines = [
        "# Workflow benchmark: parallelrag vs GraphBit vs LangGraph",
        "",
        f"`benchmarks/workflow.py`, one run on {platform.machine()} with {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; sim LLM in its own process, "
        f"{int(args.latency * 1000)} ms per request; graphbit {ver('graphbit')}, "
        f"langgraph {ver('langgraph')}, langchain-openai {ver('langchain-openai')}. "
        f"Each cell: a fresh subprocess, one warm-up run, median of {args.reps} runs. "
        "CPU = user+system seconds per run; RSS = the subprocess's peak (imports included); "
        "in flight = most concurrent requests the sim saw.",
        "",
        "| scenario | framework | wall s | vs parallelrag | CPU s/run | peak RSS MB | in flight "
        "| outputs |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = {r["scenario"]: r.get("wall_s") for r in results if r["framework"] == "parallelrag"}
    for r in results:
        if "error" in r:
            lines.append(f"| {r['scenario']} | {r['framework']} | error: {r['error']} "
                         "| | | | | |")
            continue
        b = base.get(r["scenario"])
        ratio = f"{r['wall_s'] / b:.2f}×" if b else ""
        lines.append(
            f"| {r['scenario']} | {r['framework']} | {r['wall_s']:.3f} | {ratio} | "
            f"{r['cpu_s']:.3f} | {r['peak_rss_mb']:.0f} | {r['in_flight']} | "
            f"{r['outputs']}/{r['nodes']} |"
        )
    if crash:
        lines += [
            "",
            "## GraphBit issue #287: a sync client called inside an agent tool",
            "",
            "The agent's tool calls `embed()` / `complete()` of a sync client of the same "
            "library while the workflow executes. Exit code -6 = SIGABRT (shell: 134).",
            "",
            "| tool calls | GraphBit exit code | GraphBit | parallelrag exit code | parallelrag |",
            "|---|---:|---|---:|---|",
        ]
        for c in crash:
            gb = str(c["graphbit"]).replace("|", "\\|")[:120]
            pr = str(c["parallelrag"]).replace("|", "\\|")[:120]
            lines.append(f"| {c['tool calls']} | {c['graphbit_rc']} | {gb} | "
                         f"{c['parallelrag_rc']} | {pr} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
