"""Local engine vs Ray engine on this machine, then a scaling model from the measured numbers.

Run inside a loopback-only network namespace (Ray listens on every interface)::

    .ci/netns .venv/bin/python benchmarks/ray_scaling.py [--files 300] [--out FILE.md]

1. The overhead Ray adds on one machine: the same generated corpus ingested by the local engine
   and by the Ray engine (one embedding actor, one CPU left for the load/split tasks), with a
   local model (wordllama) and with the simulated provider (50 ms per request, no limits).
2. Per-actor throughput (chunks/s) from those runs, and a model of N actors against a provider's
   limits: throughput(N) = min(N x per-actor, the provider's bound from RPM x inputs per
   request and TPM / tokens per chunk). It shows where the provider, not the cluster, is the
   bound. The model assumes actors on separate machines (no shared CPU), which is what a
   cluster gives and this 2-core machine cannot measure.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import ray  # first: a C++ library loaded before Ray's breaks its std::regex use in ray.init

from parallelrag import EmbeddingClient, Index
from parallelrag.distributed import RayOptions
from parallelrag.sim import SimConfig, SimProcess
from report import out, table, write


def make_corpus(root: Path, files: int) -> Path:
    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    for i in range(files):
        paras = "\n\n".join(
            f"## Part {p}\n\n" + " ".join(f"word{(i * 13 + p * 7 + j) % 997}" for j in range(150))
            for p in range(4))
        (corpus / f"doc{i:04}.md").write_text(f"# Document {i}\n\n{paras}\n", encoding="utf-8")
    return corpus


def run(engine: str, client: EmbeddingClient, corpus: Path, root: Path,
        name: str) -> tuple[float, int]:
    index = Index.open(root / name, embedder=client, cache=False)
    t0 = time.perf_counter()
    if engine == "ray":
        report = index.ingest([corpus], engine="ray", ray_options=RayOptions(num_actors=1))
    else:
        report = index.ingest([corpus])
    wall = time.perf_counter() - t0
    assert not report.failed, report.failed[:3]
    index.close()
    return wall, report.chunks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    args = ap.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    root = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    sim = SimProcess(SimConfig(latency=0.05)).start()
    try:
        small = make_corpus(root / "small", args.files)
        large = make_corpus(root / "large", 2 * args.files)
        clients = {
            "wordllama (local model)": lambda: EmbeddingClient.local("wordllama"),
            "sim provider, 50 ms": lambda: EmbeddingClient.openai(
                "text-embedding-3-small", base_url=sim.url, api_key="sk-bench",
                dimensions=256, batch_size=64),
        }
        rows = []
        per_actor: dict[str, float] = {}
        for n, (label, make) in enumerate(clients.items()):
            make = make()  # one client per embedder: the local engine loads its model once
            run("local", make, small, root, f"warm-local-{n}")  # model load, Ray workers
            run("ray", make, small, root, f"warm-ray-{n}")
            cells = []
            for engine in ("local", "ray"):
                t1, c1 = run(engine, make, small, root, f"{engine}-s-{n}")
                t2, c2 = run(engine, make, large, root, f"{engine}-l-{n}")
                # fixed cost (start, model load, actor start) and the marginal rate from two
                # corpus sizes: t = fixed + chunks / rate
                if t2 > t1 * 1.05:
                    rate = (c2 - c1) / (t2 - t1)
                    fixed = max(0.0, t1 - c1 / rate)
                else:  # too short to separate from the noise: the plain rate, no fixed part
                    rate, fixed = c2 / t2, 0.0
                cells.append((t1, t2, c1, c2, rate, fixed))
            (lt1, lt2, c1, c2, lrate, lfixed), (rt1, rt2, _, _, rrate, rfixed) = cells
            per_actor[label] = rrate
            rows.append([label, f"{c1} / {c2}", f"{lt1:.2f} / {lt2:.2f}",
                         f"{rt1:.2f} / {rt2:.2f}", f"{lfixed:.1f} / {rfixed:.1f}",
                         f"{lrate:,.0f}", f"{rrate:,.0f}", f"{rrate / lrate:.2f}"])
        out(f"# Ray engine on one machine ({args.files} and {2 * args.files} files, 2 CPUs, "
            f"Ray {ray.__version__})")
        table("Local engine vs Ray engine (1 embedding actor), two corpus sizes",
              ["embedder", "chunks", "local s", "ray s", "fixed s (local / ray)",
               "local chunks/s (marginal)", "ray chunks/s per actor (marginal)",
               "ray / local rate"], rows)

        # the scaling model: N actors against a provider's limits
        tokens_per_chunk = 300  # generated chunks: ~1,500 characters of short words
        inputs_per_request = 64
        limits = [("3,000 RPM / 1M TPM (OpenAI tier 1-2)", 3000, 1_000_000),
                  ("10,000 RPM / 10M TPM (high tier)", 10_000, 10_000_000)]
        remote = per_actor["sim provider, 50 ms"]
        local = per_actor["wordllama (local model)"]
        model_rows = []
        for n in (1, 2, 4, 8, 16, 32, 64):
            row = [str(n), f"{n * local:,.0f}"]
            for _, rpm, tpm in limits:
                bound = min(rpm * inputs_per_request / 60, tpm / 60 / tokens_per_chunk)
                got = min(n * remote, bound)
                who = "provider" if n * remote >= bound else "cluster"
                row.append(f"{got:,.0f} ({who})")
            model_rows.append(row)
        table("Model: chunks/s with N actors (remote columns: bounded by the provider's limits)",
              ["actors", "local model (N x measured)"] + [f"remote, {name}" for name, _, _ in limits],
              model_rows)
        out(f"\nPer-actor throughput measured above: local model {local:,.0f} chunks/s, remote "
            f"provider at 50 ms {remote:,.0f} chunks/s; {tokens_per_chunk} tokens per chunk and "
            f"{inputs_per_request} inputs per request assumed for the provider bound.")
        if args.out:
            write(args.out)
    finally:
        sim.stop()
        shutil.rmtree(root, ignore_errors=True)
        ray.shutdown()


if __name__ == "__main__":
    main()
