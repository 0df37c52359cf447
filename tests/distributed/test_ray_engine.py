"""The Ray engine gives the local engine's results: same documents, chunks, contexts, vectors.

Runs on a local Ray (2 CPUs) inside a loopback-only network namespace (see conftest.py); the
simulated provider listens on 127.0.0.1 in the test process and the Ray actors reach it there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parallelrag import EmbeddingClient, Index, LlmClient
from parallelrag.distributed import RayOptions
from parallelrag.sim import SimServer
from parallelrag.store.transfer import _export
from proc_helpers import run_script


def make_corpus(root: Path, n: int = 24) -> Path:
    corpus = root / "corpus"
    (corpus / "sub").mkdir(parents=True)
    for i in range(n):
        folder = corpus / "sub" if i % 3 == 0 else corpus
        body = "\n\n".join(
            f"## Section {s}\n\n" + " ".join(f"term{(i * 7 + s * 3 + j) % 97} doc{i}"
                                           for j in range(120))
            for s in range(3)
        )
        (folder / f"doc{i:02}.md").write_text(f"# Title {i}\n\n{body}\n", encoding="utf-8")
    (corpus / "records.jsonl").write_text(
        "\n".join(json.dumps({"text": f"record {r} about topic{r}", "kind": "rec"})
                  for r in range(3)) + "\n", encoding="utf-8")
    (corpus / "empty.txt").write_text("", encoding="utf-8")
    return corpus


def dump(index: Index) -> dict[str, Any]:
    """Every document of the index: its hash, chunks (text, offsets, context) and vectors."""
    records = index.store.documents()
    out: dict[str, Any] = {}
    for rec, chunks, vecs in _export(index.store, [r.source for r in records]):
        out[rec.source] = (
            rec.content_hash,
            [(c.text, c.start, c.end, c.index, c.context) for c in chunks],
            np.asarray(vecs, dtype=np.float32),
        )
    return out


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert sorted(a) == sorted(b)
    for source in a:
        ha, ca, va = a[source]
        hb, cb, vb = b[source]
        assert ha == hb, source
        assert ca == cb, source
        assert va.shape == vb.shape, source
        np.testing.assert_allclose(va, vb, atol=1e-5, err_msg=source)


def test_ray_engine_matches_local_engine_and_is_incremental(ray_cluster: Any,
                                                            tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    (corpus / "broken.json").write_text('{"text": oops', encoding="utf-8")  # cannot be loaded
    emb = EmbeddingClient.local("wordllama")
    # chunk context on: the title > heading path of each chunk must match too
    local = Index.open(tmp_path / "local", embedder=emb, chunk_context=True)
    on_ray = Index.open(tmp_path / "ray", embedder=EmbeddingClient.local("wordllama"),
                        chunk_context=True)
    rl = local.ingest([corpus])
    seen: list[Any] = []
    rr = on_ray.ingest([corpus], engine="ray", progress=seen.append,
                       ray_options=RayOptions(num_actors=1, files_per_task=4,
                                              files_per_batch=5))
    for field in ("added", "updated", "unchanged", "documents", "chunks", "removed"):
        assert getattr(rr, field) == getattr(rl, field), field
    assert rl.added == 24 + 3
    # a file that cannot be loaded is a failure on both engines, not a skip
    assert [Path(p).name for p, _ in rr.failed] == [Path(p).name for p, _ in rl.failed] == [
        "broken.json"]
    assert sorted(p for p, _ in rr.skipped) == sorted(p for p, _ in rl.skipped)
    assert rr.embedded == rl.embedded == rl.chunks
    assert_same(dump(local), dump(on_ray))
    assert any(c[4] for _, chunks, _ in dump(on_ray).values() for c in chunks)  # contexts set
    assert seen and seen[-1].documents_done == rr.documents

    # a second run does only what changed: nothing, then one edit, one deletion (pruned)
    again = on_ray.ingest([corpus], engine="ray", ray_options=RayOptions(num_actors=1))
    assert again.unchanged == rr.documents and again.added == again.updated == 0
    (corpus / "doc01.md").write_text("# Title 1\n\nnew text about zebras\n", encoding="utf-8")
    (corpus / "doc02.md").unlink()
    (corpus / "doc04.md").write_text("", encoding="utf-8")  # emptied: its old text must go
    r3 = on_ray.ingest([corpus], engine="ray", prune=True, ray_options=RayOptions(num_actors=1))
    l3 = local.ingest([corpus], prune=True)
    assert (r3.updated, r3.removed) == (l3.updated, l3.removed) == (1, 2)
    assert_same(dump(local), dump(on_ray))
    assert not any("doc04" in s for s in dump(on_ray))
    assert on_ray.search("zebras", k=1)[0].source.endswith("doc01.md")


def test_ray_engine_leaves_out_an_index_folder_inside_the_corpus(ray_cluster: Any,
                                                                 tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path, n=4)
    inside = Index.open(corpus / "rag-index", embedder=EmbeddingClient.local("wordllama"))
    first = inside.ingest([corpus], engine="ray", ray_options=RayOptions(num_actors=1))
    again = inside.ingest([corpus], engine="ray", ray_options=RayOptions(num_actors=1))
    sources = [d.source for d in inside.store.documents()]
    assert sources and not any("rag-index" in s for s in sources)
    assert not any("rag-index" in p for p, _ in [*first.skipped, *again.skipped])
    assert again.added == again.updated == 0 and again.unchanged == first.documents


def test_ray_engine_with_a_remote_provider_shares_its_budget(
        ray_cluster: Any, tmp_path: Path, make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.02, rpm=6000)
    corpus = make_corpus(tmp_path, n=12)

    def client() -> EmbeddingClient:
        return EmbeddingClient.openai("text-embedding-3-small", base_url=srv.url,
                                      api_key="sk-ray-SECRET", dimensions=64, rpm=1200,
                                      batch_size=16)

    local = Index.open(tmp_path / "local", embedder=client())
    local.ingest([corpus])
    on_ray = Index.open(tmp_path / "ray", embedder=client())
    before = srv.stats()["requests"]
    rr = on_ray.ingest([corpus], engine="ray", ray_options=RayOptions(num_actors=1))
    assert not rr.failed and rr.added == 15
    assert srv.stats()["requests"] > before  # the actors called the provider themselves
    assert srv.stats().get("rate_limited", 0) == 0
    assert_same(dump(local), dump(on_ray))


def test_a_dead_embedding_actor_loses_nothing(ray_cluster: Any, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path, n=20)
    marker = tmp_path / "actor-died"
    index = Index.open(tmp_path / "ray", embedder=EmbeddingClient.local("wordllama"))
    report = index.ingest([corpus], engine="ray", ray_options=RayOptions(
        num_actors=1, files_per_task=2, files_per_batch=3, fail_once=(str(marker), 2)))
    assert marker.exists()  # the actor really exited the process mid-run
    assert not report.failed
    docs = index.store.documents()
    assert len(docs) == len({d.source for d in docs}) == 20 + 3  # each document exactly once
    assert report.added == 23 and report.retries >= 1
    local = Index.open(tmp_path / "local", embedder=EmbeddingClient.local("wordllama"))
    local.ingest([corpus])
    assert_same(dump(local), dump(index))


def test_answer_many_on_ray_keeps_input_order(ray_cluster: Any, tmp_path: Path,
                                              make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.0)
    corpus = make_corpus(tmp_path, n=6)
    index = Index.open(tmp_path / "idx", embedder=EmbeddingClient.local("wordllama"))
    index.ingest([corpus])
    questions = [f"what is term{i} about?" for i in range(40)]
    llm = LlmClient.openai("gpt-sim", base_url=srv.url, api_key="sk-ray-SECRET")
    answers = index.answer_many(questions, llm=llm, k=3, engine="ray",
                                ray_options=RayOptions(num_actors=1))
    assert [a.question for a in answers] == questions
    assert all(a.text and a.citations is not None for a in answers)
    local = index.answer_many(questions[:5], llm=llm, k=3)
    assert [[h.chunk_id for h in a.hits] for a in answers[:5]] == [
        [h.chunk_id for h in a.hits] for a in local]


def test_ray_engine_refuses_documents(ray_cluster: Any, tmp_path: Path) -> None:
    from parallelrag.errors import ConfigError

    index = Index.open(tmp_path / "idx", embedder=EmbeddingClient.local("wordllama"))
    with pytest.raises(ConfigError, match="engine='local'"):
        index.ingest([("some text", {"id": "x"})], engine="ray")
    with pytest.raises(ConfigError, match="engine must be"):
        index.ingest([tmp_path], engine="spark")


def test_cli_ingest_on_ray(ray_cluster: Any, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from parallelrag.cli import main

    corpus = make_corpus(tmp_path, n=5)
    res = CliRunner().invoke(main, ["ingest", str(corpus), "--index", str(tmp_path / "idx"),
                                    "--embed", "wordllama", "--engine", "ray", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["ok"] and doc["added"] == 5 + 3 and not doc["failed"]
    res = CliRunner().invoke(main, ["search", "term5 doc1", "--index", str(tmp_path / "idx"),
                                    "--json", "-k", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["hits"][0]["source"].endswith(".md")


def test_a_cluster_address_that_cannot_work_is_a_one_line_error(tmp_path: Path) -> None:
    """``ray://`` (Ray Client) cannot run the engine: Ray Data fails inside Ray Client with an
    AttributeError (and without ``ray[client]`` ray.init raises a ValueError), so it is refused
    up front with what to do instead. A cluster address where nothing listens (a typo, a
    stopped head) made ray.init retry for minutes, printing Ray's connection warnings; it is
    refused after one short connection attempt. Each in a fresh interpreter: Ray not started."""
    import time

    (tmp_path / "a.txt").write_text("some text to index")
    for address, expect in (("ray://127.0.0.1:1", "Ray Client"),
                            ("127.0.0.1:1", "nothing answers at 127.0.0.1:1")):
        code = (
            "import sys\n"
            "from parallelrag import EmbeddingClient, Index\n"
            "from parallelrag.errors import ConfigError\n"
            f"index = Index.open({str(tmp_path / 'idx')!r}, embedder=EmbeddingClient.local('wordllama'))\n"
            "try:\n"
            f"    index.ingest([{str(tmp_path / 'a.txt')!r}], engine='ray', ray_address={address!r})\n"
            "except ConfigError as exc:\n"
            "    print('ConfigError:', exc)\n"
            "    sys.exit(0)\n"
            "sys.exit(3)\n"
        )
        t0 = time.monotonic()
        ran = run_script(code, timeout=120)
        took = time.monotonic() - t0
        assert ran.rc == 0, (address, ran.out[-2000:], ran.err[-2000:])
        assert expect in ran.out, (address, ran.out)
        assert took < 60, (address, took)


def test_ray_data_settings_of_the_process_are_left_as_they_were(tmp_path: Path) -> None:
    """The engine turns Ray Data's progress output off while it runs (library code does not
    print); it set that on the process's DataContext for good, so the user's own Ray Data work
    in the same driver lost its progress bars. Fresh interpreter: the user's settings first."""
    (tmp_path / "a.txt").write_text("some text to index")
    code = (
        "import json, ray, ray.data\n"
        "ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)\n"
        "ctx = ray.data.DataContext.get_current()\n"
        "ctx.enable_progress_bars = True\n"
        "ctx.print_on_execution_start = True\n"
        "from parallelrag import EmbeddingClient, Index\n"
        f"index = Index.open({str(tmp_path / 'idx')!r}, embedder=EmbeddingClient.local('wordllama'))\n"
        f"r = index.ingest([{str(tmp_path / 'a.txt')!r}], engine='ray')\n"
        "a = index.answer_many(['what text?'], engine='ray')\n"
        "ctx = ray.data.DataContext.get_current()\n"
        "print(json.dumps([r.added, len(a), ctx.enable_progress_bars,"
        " ctx.print_on_execution_start]))\n"
    )
    ran = run_script(code, timeout=300)
    assert ran.rc == 0, ran.err[-3000:]
    assert json.loads(ran.out.strip().splitlines()[-1]) == [1, 1, True, True]
