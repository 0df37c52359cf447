"""LLM batch completion: parallelrag ``complete_many`` vs GraphBit, openai SDK, LangChain.

One sim in a subprocess (500 ms latency, 4000 RPM, i.e. a bucket of 4000 requests per 60 s
window); 200 prompts per case. Each case uses its own model name, so every client starts cold
(parallelrag's shared limiter is keyed by base_url + model) and the answers differ per case; the
sim's rate bucket is refilled between cases.

ideal = the latency when all requests run at once, or the RPM bound if that is longer:
``latency + max(0, n - bucket) / (rpm / 60)``. ratio = ideal / wall (1.0 = perfect).
Order preserved: the answers equal ``[sim_reply(model, p) for p in prompts]`` exactly.
Failures: exceptions, ``"Error: ..."`` strings, or answers that are not any prompt's reply.

Run (peers live in their own venv):  /work/main/.bench-venv/bin/python benchmarks/llm.py
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers
from parallelrag.llm import LlmClient
from parallelrag.sim import SimConfig, SimProcess, sim_reply

KEY = peers.API_KEY


@dataclass
class Row:
    name: str
    wall_s: float | None
    ordered: bool
    failures: int
    max_in_flight: int
    rate_limited: int
    error: str | None = None


def check(out: Sequence[Any], prompts: Sequence[str], model: str) -> tuple[bool, int]:
    expected = [sim_reply(model, p) for p in prompts]
    ok_set = set(expected)
    failures = sum(
        1 for o in out
        if isinstance(o, BaseException) or not isinstance(o, str) or o not in ok_set
    ) + max(0, len(prompts) - len(out))
    return list(out) == expected, failures


def run_case(
    name: str,
    model: str,
    srv: SimProcess,
    prompts: Sequence[str],
    fn: Callable[[str, Sequence[str]], Sequence[Any]],
) -> Row:
    # refill the sim's RPM bucket and zero its counters
    rpm = srv.config.rpm
    srv.update(rpm=(rpm or 4000) + 1)
    srv.update(rpm=rpm)
    srv.reset_stats()
    t0 = time.perf_counter()
    try:
        out = fn(model, prompts)
    except Exception as exc:
        wall = time.perf_counter() - t0
        st = srv.stats()
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return Row(name, None, False, len(prompts), st["max_in_flight"], st["rate_limited"],
                   f"{tb[:200]} (after {wall:.1f} s)")
    wall = time.perf_counter() - t0
    st = srv.stats()
    ordered, failures = check(out, prompts, model)
    return Row(name, wall, ordered, failures, st["max_in_flight"], st["rate_limited"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--rpm", type=float, default=4000)
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    args = ap.parse_args()
    n, latency, rpm = args.n, args.latency, args.rpm
    prompts = [f"benchmark question {i}: what is {i} squared?" for i in range(n)]
    bucket = rpm  # the sim's window is 60 s: capacity = rpm * 60 / 60
    ideal = latency + max(0.0, n - bucket) / (rpm / 60.0)

    def pr(model: str, ps: Sequence[str], **limits: Any) -> list[Any]:
        srv_url = URL[0]
        llm = LlmClient.openai(model, base_url=srv_url, api_key=KEY, **limits)
        return llm.complete_many(ps, return_exceptions=True)

    def gb(model: str, ps: Sequence[str], conc: int | None = None) -> list[Any]:
        client = peers.graphbit_llm_client(URL[0], model=model)
        return peers.graphbit_complete_batch(client, ps, max_concurrency=conc)

    def oa(model: str, ps: Sequence[str], conc: int = 64) -> list[Any]:
        return peers.openai_async_complete_gather(URL[0], ps, concurrency=conc, model=model)

    def lc(model: str, ps: Sequence[str], conc: int | None = None) -> list[Any]:
        return peers.langchain_chat_batch(URL[0], ps, max_concurrency=conc, model=model)

    cases: list[tuple[str, str, Callable[[str, Sequence[str]], Sequence[Any]]]] = [
        ("parallelrag complete_many (defaults)", "pr-default", pr),
        ("parallelrag complete_many (initial_concurrency=n)", "pr-wide",
         lambda m, ps: pr(m, ps, initial_concurrency=n, max_concurrency=max(256, n))),
        ("GraphBit complete_batch (defaults)", "gb-default", gb),
        ("GraphBit complete_batch (max_concurrency=n)", "gb-wide", lambda m, ps: gb(m, ps, n)),
        ("openai AsyncOpenAI + gather (semaphore 64)", "oa-64", oa),
        ("openai AsyncOpenAI + gather (semaphore n)", "oa-wide", lambda m, ps: oa(m, ps, n)),
        ("LangChain ChatOpenAI.batch (defaults)", "lc-default", lc),
        ("LangChain ChatOpenAI.batch (max_concurrency=n)", "lc-wide",
         lambda m, ps: lc(m, ps, n)),
    ]
    cases = [c for c in cases if args.only.lower() in c[0].lower()]
    rows: list[Row] = []
    with SimProcess(SimConfig(latency=latency, rpm=rpm)) as srv:
        URL[0] = srv.url
        for name, model, fn in cases:
            row = run_case(name, model, srv, prompts, fn)
            rows.append(row)
            print(f"  done: {name}: {row.wall_s if row.wall_s is not None else 'FAILED'}",
                  file=sys.stderr)

    versions = peers.peer_versions()
    head = (
        f"LLM batch: {n} prompts, sim latency {latency * 1000:.0f} ms, {rpm:.0f} RPM "
        f"(60 s window) → ideal {ideal:.2f} s\n"
        f"peers: graphbit {versions.get('graphbit')}, openai {versions.get('openai')}, "
        f"langchain-openai {versions.get('langchain-openai')}\n"
    )
    lines = [
        "| case | wall (s) | ideal / wall | order preserved | failures | sim max in flight "
        "| 429s |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        if r.wall_s is None:
            lines.append(f"| {r.name} | failed | – | – | {r.failures} | {r.max_in_flight} "
                         f"| {r.rate_limited} |")
        else:
            lines.append(
                f"| {r.name} | {r.wall_s:.2f} | {ideal / r.wall_s:.2f} | "
                f"{'yes' if r.ordered else 'no'} | {r.failures} | {r.max_in_flight} "
                f"| {r.rate_limited} |"
            )
    errors = [f"- {r.name}: {r.error}" for r in rows if r.error]
    text = head + "\n" + "\n".join(lines) + ("\n\nerrors:\n" + "\n".join(errors) if errors else "")
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


URL: list[str] = [""]

if __name__ == "__main__":
    main()
