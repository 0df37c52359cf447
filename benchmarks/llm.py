"""LLM batch completion: parallelrag ``complete_many`` vs GraphBit, openai SDK, LangChain.

One sim in a subprocess (500 ms latency, 4000 RPM, i.e. a bucket of 4000 requests per 60 s
window); 200 prompts per call. Every case runs in a fresh subprocess of its own and makes two
calls with one client object: **cold** (the first call of a new process: no connections, nothing
learned) and **warm** (the same client again: pooled connections, limits learned). Each case uses
its own model name, so the answers differ per case; the sim's rate bucket is refilled and its
counters reset before every call. Before the first case, one unreported batch from a throwaway
process warms the sim itself (its first burst of fresh connections is slower, which used to
land on whichever case ran first).

ideal = the latency when all requests run at once, or the RPM bound if that is longer:
``latency + max(0, n - bucket) / (rpm / 60)``. ratio = ideal / wall (1.0 = perfect).
Order preserved: the answers equal ``[sim_reply(model, p) for p in prompts]`` exactly.
Failures: exceptions, ``"Error: ..."`` strings, or answers that are not any prompt's reply.

Run (peers live in their own venv):  /work/main/.bench-venv/bin/python benchmarks/llm.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers
from parallelrag.llm import LlmClient
from parallelrag.sim import SimConfig, SimProcess, sim_reply

KEY = peers.API_KEY
ROUNDS = ("cold", "warm")


@dataclass
class Row:
    name: str
    round: str
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


def _sim(url: str, method: str, path: str, body: Any = None) -> Any:
    base = url[: -len("/v1")] if url.endswith("/v1") else url
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _fresh_bucket(url: str, rpm: float) -> None:
    """Refill the sim's RPM bucket (a limit change rebuilds it) and zero its counters."""
    _sim(url, "POST", "/sim/config", {"rpm": rpm + 1})
    _sim(url, "POST", "/sim/config", {"rpm": rpm})
    _sim(url, "POST", "/sim/reset", {})


# --------------------------------------------------------------------------- the clients
# Each maker returns a callable "run one batch" over ONE client object (reused for both rounds).
Batch = Callable[[Sequence[str]], Sequence[Any]]


def make_parallelrag(url: str, model: str, n: int, variant: str) -> Batch:
    limits: dict[str, Any] = {}
    if variant == "wide":
        limits = {"initial_concurrency": n, "max_concurrency": max(256, n)}
    llm = LlmClient.openai(model, base_url=url, api_key=KEY, **limits)
    return lambda ps: llm.complete_many(ps, return_exceptions=True)


def make_graphbit(url: str, model: str, n: int, variant: str) -> Batch:
    client = peers.graphbit_llm_client(url, model=model)
    conc = n if variant == "wide" else None
    return lambda ps: peers.graphbit_complete_batch(client, ps, max_concurrency=conc)


def make_openai(url: str, model: str, n: int, variant: str) -> Batch:
    run, _ = peers.openai_async_chat_batcher(url, n if variant == "wide" else 64, model)
    return run


def make_langchain(url: str, model: str, n: int, variant: str) -> Batch:
    from langchain_core.runnables import RunnableConfig
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    llm = ChatOpenAI(model=model, base_url=url, api_key=SecretStr(KEY), max_retries=2)
    config = RunnableConfig()
    if variant == "wide":
        config["max_concurrency"] = n

    def run(ps: Sequence[str]) -> list[Any]:
        out = llm.batch(list(ps), config=config, return_exceptions=True)
        return [o if isinstance(o, BaseException) else str(o.content) for o in out]

    return run


def make_floor(url: str, model: str, n: int, variant: str) -> Batch:
    """Not a client: about the least a Python process can do against this server. One raw
    socket per request on uvloop (kept open for the warm call), the request bytes written in
    one go, the answer read by its content-length; no retries, limits, errors or parsing
    beyond the answer. Between this row and the ideal lies mostly the server's (and kernel's)
    own time on these 2 cores; a native client (GraphBit's Rust) can still open its connections
    for less CPU than Python's socket layer."""
    import asyncio
    from urllib.parse import urlsplit

    import orjson
    import uvloop

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path.rstrip("/") + "/chat/completions"
    loop = uvloop.new_event_loop()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def request_bytes(p: str) -> bytes:
        body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": p}]})
        return (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
                f"authorization: Bearer {KEY}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n").encode() + body

    async def one(req: bytes) -> str:
        if idle:
            reader, writer = idle.pop()
        else:
            reader, writer = await asyncio.open_connection(host, port)
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        idle.append((reader, writer))
        return str(orjson.loads(body)["choices"][0]["message"]["content"])

    def run(ps: Sequence[str]) -> list[Any]:
        reqs = [request_bytes(p) for p in ps]  # timed too: every client builds its requests

        async def many() -> list[Any]:
            return list(await asyncio.gather(*(one(r) for r in reqs), return_exceptions=True))

        return loop.run_until_complete(many())

    return run


MAKERS: dict[str, Callable[[str, str, int, str], Batch]] = {
    "parallelrag": make_parallelrag, "graphbit": make_graphbit,
    "openai": make_openai, "langchain": make_langchain, "floor": make_floor,
}

# (row name, system, variant, model name)
CASES: list[tuple[str, str, str, str]] = [
    ("parallelrag complete_many (defaults)", "parallelrag", "default", "pr-default"),
    ("parallelrag complete_many (initial_concurrency=n)", "parallelrag", "wide", "pr-wide"),
    ("GraphBit complete_batch (defaults)", "graphbit", "default", "gb-default"),
    ("GraphBit complete_batch (max_concurrency=n)", "graphbit", "wide", "gb-wide"),
    ("openai AsyncOpenAI + gather (semaphore 64)", "openai", "default", "oa-64"),
    ("openai AsyncOpenAI + gather (semaphore n)", "openai", "wide", "oa-wide"),
    ("LangChain ChatOpenAI.batch (defaults)", "langchain", "default", "lc-default"),
    ("LangChain ChatOpenAI.batch (max_concurrency=n)", "langchain", "wide", "lc-wide"),
    ("reference: raw sockets on uvloop, no client", "floor", "wide", "floor"),
]


def prompts_for(n: int) -> list[str]:
    return [f"benchmark question {i}: what is {i} squared?" for i in range(n)]


def child(system: str, variant: str, model: str, url: str, n: int, rpm: float) -> None:
    """One case in this fresh process: build one client, run the cold and the warm call."""
    prompts = prompts_for(n)
    results: list[dict[str, Any]] = []
    try:
        batch = MAKERS[system](url, model, n, variant)
    except Exception as exc:
        print(json.dumps([{"error": f"setup: {type(exc).__name__}: {exc}"[:300]}]))
        return
    for rnd in ROUNDS:
        _fresh_bucket(url, rpm)
        t0 = time.perf_counter()
        try:
            out = batch(prompts)
        except Exception as exc:
            wall = time.perf_counter() - t0
            st = _sim(url, "GET", "/sim/stats")
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            results.append({"round": rnd, "wall_s": None, "ordered": False, "failures": n,
                            "max_in_flight": st["max_in_flight"],
                            "rate_limited": st["rate_limited"],
                            "error": f"{tb[:200]} (after {wall:.1f} s)"})
            continue
        wall = time.perf_counter() - t0
        st = _sim(url, "GET", "/sim/stats")
        ordered, failures = check(out, prompts, model)
        results.append({"round": rnd, "wall_s": wall, "ordered": ordered, "failures": failures,
                        "max_in_flight": st["max_in_flight"],
                        "rate_limited": st["rate_limited"]})
    print(json.dumps(results))


def run_case(name: str, system: str, variant: str, model: str, url: str, n: int,
             rpm: float) -> list[Row]:
    cmd = [sys.executable, __file__, "--child", system, variant, model, url, str(n), str(rpm)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return [Row(name, rnd, None, False, n, 0, 0, f"exit {proc.returncode}: {err[:200]}")
                for rnd in ROUNDS]
    rows = []
    for r in json.loads(lines[-1]):
        if "round" not in r:
            return [Row(name, rnd, None, False, n, 0, 0, r.get("error")) for rnd in ROUNDS]
        rows.append(Row(name, r["round"], r["wall_s"], r["ordered"], r["failures"],
                        r["max_in_flight"], r["rate_limited"], r.get("error")))
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        system, variant, model, url, n_s, rpm_s = sys.argv[2:8]
        child(system, variant, model, url, int(n_s), float(rpm_s))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--rpm", type=float, default=4000)
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    args = ap.parse_args()
    n, latency, rpm = args.n, args.latency, args.rpm
    bucket = rpm  # the sim's window is 60 s: capacity = rpm * 60 / 60
    ideal = latency + max(0.0, n - bucket) / (rpm / 60.0)
    cases = [c for c in CASES if args.only.lower() in c[0].lower()]
    rows: list[Row] = []
    with SimProcess(SimConfig(latency=latency, rpm=rpm)) as srv:
        # The sim's own first burst of n fresh connections is slow (its handlers, buffers and
        # code paths warm up): whichever case ran first lost 30-60 ms of its cold call to that.
        # One unreported batch from a throwaway process warms the server for every case.
        run_case("warm-up", "parallelrag", "wide", "warm-up", srv.url, n, rpm)
        for name, system, variant, model in cases:
            got = run_case(name, system, variant, model, srv.url, n, rpm)
            rows.extend(got)
            walls = ", ".join(f"{r.round} {r.wall_s:.2f} s" if r.wall_s is not None
                              else f"{r.round} FAILED" for r in got)
            print(f"  done: {name}: {walls}", file=sys.stderr)

    versions = peers.peer_versions()
    head = (
        f"LLM batch: {n} prompts, sim latency {latency * 1000:.0f} ms, {rpm:.0f} RPM "
        f"(60 s window) → ideal {ideal:.2f} s; every case in a fresh process, cold call then "
        f"warm call with the same client\n"
        f"peers: graphbit {versions.get('graphbit')}, openai {versions.get('openai')}, "
        f"langchain-openai {versions.get('langchain-openai')}\n"
    )
    lines = [
        "| case | call | wall (s) | ideal / wall | order preserved | failures "
        "| sim max in flight | 429s |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        if r.wall_s is None:
            lines.append(f"| {r.name} | {r.round} | failed | – | – | {r.failures} "
                         f"| {r.max_in_flight} | {r.rate_limited} |")
        else:
            lines.append(
                f"| {r.name} | {r.round} | {r.wall_s:.2f} | {ideal / r.wall_s:.2f} | "
                f"{'yes' if r.ordered else 'no'} | {r.failures} | {r.max_in_flight} "
                f"| {r.rate_limited} |"
            )
    errors = [f"- {r.name} ({r.round}): {r.error}" for r in rows if r.error]
    text = head + "\n" + "\n".join(lines) + ("\n\nerrors:\n" + "\n".join(errors) if errors else "")
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
