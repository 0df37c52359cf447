# mypy: disable-error-code="import-untyped,import-not-found,unused-ignore"
"""Splitters side by side: MB/s and chunks/s, ours vs GraphBit 0.6.8, LangChain, chonkie,
semchunk and semantic-text-splitter; plus which inputs crash which peer.

Run in the benchmark environment (peers installed from benchmarks/requirements.txt)::

    .bench-venv/bin/python benchmarks/splitters.py            # full table (~10 min on 2 cores)
    .bench-venv/bin/python benchmarks/splitters.py --quick    # fewer inputs, one repetition
    .bench-venv/bin/python benchmarks/splitters.py --contested 7 [FILTER]  # close cells, alternating
    .bench-venv/bin/python benchmarks/splitters.py --crashes   # only the crash table

Every measurement runs in its own subprocess (same interpreter, same machine, one at a time), so
a peer that aborts the interpreter (GraphBit's RecursiveSplitter on CJK text) is recorded with its
exit code instead of ending the run. Inputs: the Python 3.11 docs as text (benchmarks/corpus.py;
"pydoc 2MB" = the first 2 MB of all pages joined, "500 docs" = split_many over the first 500
pages), 1 MB of generated ASCII and 1 MB of generated CJK. MB = UTF-8 megabytes of input.
Sizes: chunk 1000 / overlap 100 characters (recursive, character), 1000 / 1 sentence (sentence),
1000 / 0 (markdown), 256 / 32 tokens (token).

Two figures per row: "MB/s" is the best of up to 5 repetitions on the same input; "first call"
is the first of them, in a fresh process on text it has never seen (after construction, which is
where tokenizers load). They differ most where an encoder caches what it has already encoded:
fastokens (our cl100k engine) keeps a cache of pre-tokens, so repeating the very same text is
faster than new text; judge the cl100k token rows on the first-call column.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

Split1 = Callable[[str], list[Any]]
SplitN = Callable[[list[str]], list[list[Any]]]

# (kind, implementation) -> builder code run in the worker; each builder returns
# (split_one, split_many or None)
IMPLS: dict[str, list[str]] = {
    "recursive": ["parallelrag", "graphbit", "langchain", "chonkie", "semchunk", "semantic-text-splitter"],
    "character": ["parallelrag", "graphbit", "langchain"],
    "sentence": ["parallelrag", "graphbit", "chonkie"],
    "markdown": ["parallelrag", "langchain", "semantic-text-splitter"],
    "token": [
        "parallelrag (minilm)", "parallelrag (cl100k)", "raw minilm encode", "raw cl100k encode",
        "raw cl100k encode (fastokens)", "graphbit", "langchain (cl100k)", "chonkie (character)", "semantic-text-splitter (minilm)",
    ],
}
INPUTS = ["pydoc 2MB", "ascii 1MB", "cjk 1MB", "500 docs"]


def _loop(split: Split1) -> SplitN:
    return lambda texts: [split(t) for t in texts]


def build(kind: str, impl: str, size: int | None = None, overlap: int | None = None) -> tuple[Split1, SplitN]:
    """The splitter ``impl`` of ``kind`` as (split one text, split a list)."""
    import peers

    cs = size or {"token": 256}.get(kind, 1000)
    ov = overlap if overlap is not None else {"recursive": 100, "character": 100, "token": 32, "sentence": 1}.get(kind, 0)
    if impl.startswith("parallelrag"):
        import parallelrag.splitters as ps

        ours: ps.Splitter
        if kind == "token":
            ours = ps.TokenSplitter(cs, ov, "cl100k" if "cl100k" in impl else "minilm")
        else:
            cls = {"recursive": ps.RecursiveSplitter, "character": ps.CharacterSplitter,
                   "sentence": ps.SentenceSplitter, "markdown": ps.MarkdownSplitter}[kind]
            ours = cls(cs, ov)
        # like for like with peers whose chunk objects make their text on access: every run
        # ends with each chunk's text as a Python string (ours already holds it)
        return (lambda t: [c.text for c in ours.split_text(t)],
                lambda ts: [[c.text for c in cs] for cs in ours.split_many(ts)])
    if impl.startswith("raw"):
        from parallelrag.splitters.length import _load_cl100k, _load_minilm

        if "minilm" in impl:
            tok = _load_minilm()
            return (lambda t: tok.encode(t, add_special_tokens=False).ids,
                    lambda ts: [e.ids for e in tok.encode_batch(ts, add_special_tokens=False)])
        if "fastokens" in impl:
            from parallelrag.splitters.length import _load_cl100k_fast

            ft, _ = _load_cl100k_fast()
            return (lambda t: ft.encode_batch_flat([t])[0]), lambda ts: ft.encode_batch_flat(ts)[0]
        enc = _load_cl100k()
        return enc.encode_ordinary, lambda ts: enc.encode_ordinary_batch(ts, num_threads=os.cpu_count() or 2)
    if impl == "graphbit":
        import graphbit

        cls = {"character": graphbit.CharacterSplitter, "token": graphbit.TokenSplitter,
               "sentence": graphbit.SentenceSplitter, "recursive": graphbit.RecursiveSplitter}[kind]
        gb = cls(cs, ov)
        # GraphBit's TextChunk makes its ``content`` string on access: read it once per chunk,
        # as anything that embeds or stores the chunk does
        return (lambda t: [c.content for c in gb.split_text(t)],
                lambda ts: [[c.content for c in cs] for cs in gb.split_texts(ts)])
    if impl.startswith("langchain"):
        if kind == "markdown":
            import langchain_text_splitters as lts

            md = lts.MarkdownTextSplitter(chunk_size=cs, chunk_overlap=ov)
            return md.split_text, _loop(md.split_text)
        split = peers.langchain_splitter(kind, cs, ov)
        return split, _loop(split)
    if impl.startswith("chonkie"):
        import chonkie

        chunker: Any
        if kind == "recursive":
            chunker = chonkie.RecursiveChunker(tokenizer="character", chunk_size=cs)
        elif kind == "token":
            chunker = chonkie.TokenChunker(tokenizer="character", chunk_size=cs, chunk_overlap=ov)
        else:
            chunker = chonkie.SentenceChunker(tokenizer="character", chunk_size=cs, chunk_overlap=0)
        return chunker.chunk, chunker.chunk_batch
    if impl == "semchunk":
        from semchunk.semchunk import chunkerify

        ch = chunkerify(len, cs)
        return ch, ch  # semchunk's chunker takes a list too (processes=1)
    if impl.startswith("semantic-text-splitter"):
        from semantic_text_splitter import MarkdownSplitter, TextSplitter

        if kind == "token":
            from parallelrag.splitters.length import _load_minilm

            sts = TextSplitter.from_huggingface_tokenizer(_load_minilm(), cs, overlap=ov)
        elif kind == "markdown":
            sts = MarkdownSplitter(cs, overlap=ov)
        else:
            sts = TextSplitter(cs, overlap=ov)
        return sts.chunks, sts.chunk_all
    raise ValueError(impl)


def load_input(name: str) -> str | list[str]:
    from corpus import ascii_mb, cjk_mb, pydoc_corpus

    if name == "pydoc 2MB":
        return "\n\n".join(t for _, t in pydoc_corpus())[:2_000_000]
    if name == "ascii 1MB":
        return next(ascii_mb())
    if name == "cjk 1MB":
        return next(cjk_mb())
    if name == "500 docs":
        return [t for _, t in pydoc_corpus()[:500]]
    raise ValueError(name)


def worker(kind: str, impl: str, input_name: str, quick: bool) -> None:
    data = load_input(input_name)
    one, many = build(kind, impl)
    run: Callable[[], Any] = (lambda: many(data)) if isinstance(data, list) else (lambda: one(data))
    texts = data if isinstance(data, list) else [data]
    nbytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    best = float("inf")
    first = 0.0
    spent = 0.0
    reps = 0
    out: Any = None
    while reps < (1 if quick else 5) and (reps == 0 or spent < 3.0):
        t0 = time.perf_counter()
        out = run()
        dt = time.perf_counter() - t0
        first = first or dt
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    if impl.startswith("raw"):
        nchunks = 0  # token ids, not chunks
    else:
        nchunks = sum(len(x) for x in out) if isinstance(data, list) else len(out)
    print(json.dumps({"s": best, "mb_s": nbytes / 1e6 / best, "first_mb_s": nbytes / 1e6 / first,
                      "chunks_s": nchunks / best, "chunks": nchunks}))


CRASH_INPUTS: dict[str, str] = {
    "cjk, chunk 16": "中文字符测试，日本語のテキスト。" * 500,
    "emoji+combining, chunk 16": "👩‍👩‍👧 e\u0301 ﬁ İ 😀😀 " * 300,
    "lone surrogate": "abc \ud800 def " * 200,
    "NUL and CRLF": "line\x00one\r\nline two\r\n\r\n" * 200,
    "10 MB one line": "x" * 10_000_000,
    "1 M spaces": "alpha beta" + " " * 1_000_000 + "gamma delta",
    "200 K dots": "." * 200_000,
    "empty": "",
}


def crash_worker(kind: str, impl: str, input_name: str) -> None:
    text = CRASH_INPUTS[input_name]
    size = 16 if "chunk 16" in input_name else None
    overlap = 4 if size else None
    one, _ = build(kind, impl, size, overlap)
    out = one(text)
    print(json.dumps({"chunks": len(out)}))


def sub(args: list[str], timeout: float) -> tuple[int | str, dict[str, Any] | None, str]:
    try:
        res = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", None, ""
    payload = None
    for line in res.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            payload = json.loads(line)
            break
    err = res.stderr.strip().splitlines()
    # the informative line: a Rust panic message or the Python exception, else the last line
    key = [ln for ln in err if "panicked" in ln or "Error" in ln]
    line = (key[-1] if key else err[-1]) if err else ""
    return res.returncode, payload, line[:90]


def main(quick: bool) -> None:
    import peers

    versions = peers.peer_versions()
    print("peers:", ", ".join(f"{k} {v}" for k, v in versions.items() if v), flush=True)
    inputs = INPUTS if not quick else ["pydoc 2MB", "cjk 1MB", "500 docs"]
    results: dict[tuple[str, str, str], dict[str, Any] | str] = {}
    for kind, impls in IMPLS.items():
        for input_name in inputs:
            for impl in impls:
                rc, payload, err = sub(["--worker", kind, impl, input_name] + (["--quick"] if quick else []), 300)
                if payload is None:
                    why = "SIGABRT" if rc == -6 else f"exit {rc}"
                    results[(kind, input_name, impl)] = f"failed ({why}: {err})"
                else:
                    results[(kind, input_name, impl)] = payload
                print(kind, input_name, impl, results[(kind, input_name, impl)], flush=True)
    lines = ["| splitter | input | implementation | MB/s | first call MB/s | chunks/s | chunks "
             "| ours ÷ peer (MB/s) | ours ÷ peer (first call) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for kind, impls in IMPLS.items():
        for input_name in inputs:
            base = results.get((kind, input_name, impls[0]))
            for impl in impls:
                r = results[(kind, input_name, impl)]
                if isinstance(r, str):
                    lines.append(f"| {kind} | {input_name} | {impl} | – | – | – | – | {r} | |")
                    continue
                ratio = first_ratio = ""
                if kind == "token":
                    mine = results.get((kind, input_name, "parallelrag (cl100k)" if "cl100k" in impl else "parallelrag (minilm)"))
                else:
                    mine = base
                if isinstance(mine, dict) and not impl.startswith("parallelrag"):
                    ratio = f"{mine['mb_s'] / r['mb_s']:.2f}×"
                    first_ratio = f"{mine['first_mb_s'] / r['first_mb_s']:.2f}×"
                chunks = "–" if impl.startswith("raw") else str(r["chunks"])
                chunks_s = "–" if impl.startswith("raw") else f"{r['chunks_s']:.0f}"
                lines.append(
                    f"| {kind} | {input_name} | {impl} | {r['mb_s']:.2f} | {r['first_mb_s']:.2f} "
                    f"| {chunks_s} | {chunks} | {ratio} | {first_ratio} |"
                )
    table = "\n".join(lines)
    print(table, flush=True)

    crash = crash_table()
    out = HERE / ".cache" / ("splitters-quick.md" if quick else "splitters.md")
    out.parent.mkdir(exist_ok=True)
    out.write_text(table + "\n\n" + crash + "\n", encoding="utf-8")
    print(f"written to {out}")


def crash_table() -> str:
    """Which inputs crash which peer: each (splitter, implementation, input) in a subprocess."""
    crash_lines = ["| splitter | implementation | " + " | ".join(CRASH_INPUTS) + " |",
                   "|---|---|" + "---|" * len(CRASH_INPUTS)]
    for kind, impls in IMPLS.items():
        for impl in impls:
            if impl.startswith("raw"):
                continue
            cells = []
            for input_name in CRASH_INPUTS:
                rc, payload, err = sub(["--crash", kind, impl, input_name], 120)
                if payload is not None and rc == 0:
                    cells.append(f"ok ({payload['chunks']})")
                elif rc == "timeout":
                    cells.append("**timeout >120 s**")
                elif isinstance(rc, int) and rc < 0:
                    cells.append(f"**signal {-rc} (exit {128 - rc})**")
                else:
                    cells.append(f"**exit {rc}**: {err.replace('|', '/')}")
            crash_lines.append(f"| {kind} | {impl} | " + " | ".join(cells) + " |")
            print(crash_lines[-1], flush=True)
    crash = "\n".join(crash_lines)
    print(crash)
    return crash


# cells where one run cannot settle the comparison on a shared 2-core machine, and the sentence
# splitter against GraphBit's on every input: (kind, input, ours, peer)
CONTESTED: list[tuple[str, str, str, str]] = [
    *[("character", name, "parallelrag", "graphbit") for name in INPUTS],
    ("recursive", "ascii 1MB", "parallelrag", "graphbit"),  # GraphBit aborts on the others
    *[("sentence", name, "parallelrag", "graphbit") for name in INPUTS],
    ("character", "cjk 1MB", "parallelrag", "langchain"),
    ("markdown", "500 docs", "parallelrag", "langchain"),
    ("markdown", "pydoc 2MB", "parallelrag", "langchain"),
    *[("token", name, "parallelrag (cl100k)", peer) for name in INPUTS
      for peer in ("langchain (cl100k)", "raw cl100k encode (fastokens)")],
]


def contested(rounds: int, only: str = "") -> None:
    """Each contested cell ``rounds`` times, ours and the peer alternating (each in a fresh
    subprocess, as in the table): the median and range of the ratio, best-of-reps and first
    call. Machine noise moves single runs by up to ~30 %; the median of alternating pairs is
    what to compare against a target."""
    import statistics

    lines = ["| splitter | input | ours ÷ peer | MB/s ratio: median [min–max] | first call: median [min–max] | rounds |",
             "|---|---|---|---:|---:|---:|"]
    for kind, input_name, ours, peer in CONTESTED:
        if only not in f"{kind} | {input_name} | {peer}":
            continue
        best: list[float] = []
        first: list[float] = []
        for _ in range(rounds):
            got = {}
            for impl in (ours, peer):
                _, payload, err = sub(["--worker", kind, impl, input_name], 300)
                if payload is None:
                    raise SystemExit(f"{kind} {input_name} {impl} failed: {err}")
                got[impl] = payload
            best.append(got[ours]["mb_s"] / got[peer]["mb_s"])
            first.append(got[ours]["first_mb_s"] / got[peer]["first_mb_s"])
        line = (f"| {kind} | {input_name} | {ours} ÷ {peer} "
                f"| {statistics.median(best):.2f}× [{min(best):.2f}–{max(best):.2f}] "
                f"| {statistics.median(first):.2f}× [{min(first):.2f}–{max(first):.2f}] | {rounds} |")
        lines.append(line)
        print(line, flush=True)
    out = HERE / ".cache" / "splitters-contested.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"written to {out}")


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv and argv[0] == "--worker":
        worker(argv[1], argv[2], argv[3], "--quick" in argv)
    elif argv and argv[0] == "--crash":
        crash_worker(argv[1], argv[2], argv[3])
    elif argv and argv[0] == "--crashes":
        (HERE / ".cache").mkdir(exist_ok=True)
        (HERE / ".cache" / "splitters-crashes.md").write_text(crash_table() + "\n", encoding="utf-8")
    elif argv and argv[0] == "--contested":
        contested(int(argv[1]) if len(argv) > 1 else 7, argv[2] if len(argv) > 2 else "")
    else:
        main("--quick" in argv)
