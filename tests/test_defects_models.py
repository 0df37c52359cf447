"""The user's own models and ML stack in the same process: sentence-transformers folders that
differ from MiniLM (pooling, no Normalize module, dimension, limit, default prompt, plain
transformers folders), a folder whose model is replaced under an index, hub ids from the local
cache, the process configuration (environment, logging, progress bars, torch threads) left as
the user set it, the user's torch work beside parallelrag's, and tensors from the user's own
embedding function. Tiny random BERT models are built here: nothing is downloaded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_helpers import build_model
from parallelrag import EmbeddingClient, Index
from parallelrag.cache import EmbeddingCache
from parallelrag.documents import Document
from parallelrag.errors import BadRequestError, BatchError

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("own-models")
    out: dict[str, Path] = {}
    out["plain"] = build_model(root / "mean32")
    out["mean32"] = root / "mean32"
    build_model(root / "mean32-other", seed=1)  # same shape, other weights
    out["other"] = root / "mean32-other"
    build_model(root / "cls48", dim=48, pooling="cls", max_len=512)
    out["cls48"] = root / "cls48"
    build_model(root / "prompted", max_len=16, prompts={"query": "query: ", "doc": "passage: "},
                default_prompt="doc")
    out["prompted"] = root / "prompted"
    yield out


def _env_without_hf() -> dict[str, str]:
    """The user's environment as it was before these tests (conftest sets HF_HUB_OFFLINE)."""
    drop = ("HF_", "TRANSFORMERS_", "TOKENIZERS_", "HUGGINGFACE_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def run_script(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last, returned parsed."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env or _env_without_hf(), timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["stderr"] = proc.stderr
    return out


# ------------------------------------------------------------------ models unlike MiniLM
def test_own_models_give_unit_vectors_and_use_their_own_limit(models: dict[str, Path]) -> None:
    """Works: no Normalize module, CLS pooling, 32/48-d, a 32 or 512 limit, a plain
    transformers folder (config + weights, no modules.json): unit vectors, the folder's own
    dimension and word-piece limit."""
    for name, dim, limit in (("mean32", 32, 32), ("cls48", 48, 512), ("plain", 32, 32)):
        emb = EmbeddingClient.local(str(models[name]))
        vecs = emb.embed_many(["the cat sat", "dog", "the mat"])
        assert vecs.shape == (3, dim) and emb.dimension == dim, name
        assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5), name
        long = "the cat " * (limit // 2 + 2)
        with pytest.raises(BadRequestError, match=f"over the model's limit of {limit}"):
            emb.embed_many([long])
        cut = EmbeddingClient.local(str(models[name]), truncate=True).embed(long)
        assert cut.shape == (dim,), name


def test_default_prompt_counts_against_the_limit(models: dict[str, Path]) -> None:
    """A model with a default prompt ("passage: ") puts it before every input: an input that
    fits the limit only without it was silently cut by the model; it is counted with it."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(models["prompted"] / "tokenizer.json"))
    text = "the cat sat the cat sat the cat sat the cat"
    assert len(tok.encode(text).ids) <= 16 < len(tok.encode("passage: " + text).ids)
    emb = EmbeddingClient.local(str(models["prompted"]))
    with pytest.raises(BadRequestError, match="over the model's limit of 16"):
        emb.embed_many([text])
    cut = EmbeddingClient.local(str(models["prompted"]), truncate=True)
    assert cut.embed(text).shape == (32,)
    kept = cut._backend.truncate(text, 16)  # what truncate=True sends: room for the prompt
    assert kept and text.startswith(kept) and len(kept) < len(text)
    assert len(tok.encode("passage: " + kept).ids) <= 16


# ------------------------------------------------------------------ a replaced model folder
def test_model_replaced_in_its_folder_is_refused_by_the_index(
        models: dict[str, Path], tmp_path: Path) -> None:
    """An index built with the model in a folder, opened after another model of the same
    dimension was put in that folder, would mix two models' vectors: it is refused, and the
    embedding cache gives the new model's vectors, not the old one's."""
    folder = tmp_path / "my model ü"  # spaces and non-ASCII in the path
    shutil.copytree(models["mean32"], folder)
    idx_dir, cache = tmp_path / "idx", tmp_path / "cache.sqlite"
    with Index.open(idx_dir, embedder=f"local:{folder}") as index:
        index.ingest([Document(text="the cat sat on the mat", source="a.txt")])
    old_cache = EmbeddingClient.local(str(folder), cache=EmbeddingCache(cache))
    old_vec = old_cache.embed("the dog sat")
    reopen = f"""
        import json, sys, numpy as np
        from parallelrag import EmbeddingClient, Index
        from parallelrag.cache import EmbeddingCache
        from parallelrag.errors import ConfigError
        out = {{}}
        try:
            with Index.open({str(idx_dir)!r}, create=False) as index:
                out["hits"] = len(index.search("the cat", k=1, mode="vector"))
        except ConfigError as exc:
            out["error"] = str(exc)
        emb = EmbeddingClient.local({str(folder)!r}, cache=EmbeddingCache({str(cache)!r}))
        out["vec"] = emb.embed("the dog sat").tolist()
        out["fresh"] = EmbeddingClient.local({str(folder)!r}).embed("the dog sat").tolist()
        print(json.dumps(out))
    """
    same = run_script(reopen)  # the same folder in a new process: the same model
    assert same.get("hits") == 1, same.get("error")
    shutil.rmtree(folder)
    shutil.copytree(models["other"], folder)
    replaced = run_script(reopen)
    assert "hits" not in replaced, "the index was opened with another model in its folder"
    assert "was built with model" in replaced["error"]
    assert np.allclose(replaced["vec"], replaced["fresh"], atol=1e-6)
    assert not np.allclose(replaced["vec"], old_vec, atol=1e-3)


# ------------------------------------------------------------------ the process configuration
@pytest.fixture(scope="module")
def after_local_use(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A fresh process (no HF_* variables) where the user set transformers' verbosity and torch
    threads, used parallelrag's local models (minilm, and a hub id from a local cache), and
    then looks at its own configuration."""
    hub = tmp_path_factory.mktemp("hub-cache")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / "models--tiny-org--tiny-model"
    shutil.copytree(models["mean32"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = _env_without_hf()
    env["HF_HUB_CACHE"] = str(hub)
    return run_script("""
        import json, os, subprocess, sys, time
        import torch
        torch.set_num_threads(1)
        import transformers.utils.logging as hf_logging
        hf_logging.set_verbosity_info()
        from parallelrag import EmbeddingClient
        from parallelrag.errors import ConfigError
        out = {"minilm": EmbeddingClient.local("minilm").embed("hello").shape[0]}
        hub = EmbeddingClient.local("tiny-org/tiny-model")
        out["hub_dim"] = hub.embed("the cat").shape[0]
        out["hub_model"] = hub.model
        t0 = time.monotonic()
        try:
            EmbeddingClient.local("no-org/no-such-model-xyz").embed("x")
        except ConfigError as exc:
            out["missing"] = str(exc)
        out["missing_s"] = time.monotonic() - t0
        import huggingface_hub.constants as hub_constants
        out["hub_offline"] = hub_constants.HF_HUB_OFFLINE
        out["env"] = sorted(k for k in os.environ if k.startswith(("HF_", "TRANSFORMERS_",
                                                                    "TOKENIZERS_")))
        out["child_env"] = subprocess.run(
            [sys.executable, "-c", "import os; print(os.environ.get('HF_HUB_OFFLINE'))"],
            capture_output=True, text=True).stdout.strip()
        out["verbosity"] = hf_logging.get_verbosity()
        out["progress_bars"] = hf_logging.is_progress_bar_enabled()
        out["threads"] = torch.get_num_threads()
        print(json.dumps(out))
    """, env=env)


def test_local_models_leave_the_process_configuration_alone(after_local_use: Any) -> None:
    """Loading a local model set HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, TOKENIZERS_PARALLELISM...
    in os.environ (so the user's own hub downloads failed and child processes inherited them),
    and transformers' verbosity and progress bars for good. Now loading is offline through
    local_files_only and quiet only while it lasts."""
    r = after_local_use
    assert r["minilm"] == 384
    assert r["env"] == ["HF_HUB_CACHE"], r["env"]
    assert r["hub_offline"] is False
    assert r["child_env"] == "None"
    assert r["verbosity"] == 20 and r["progress_bars"] is True  # as the user set them
    assert r["threads"] == 1
    assert "Loading weights" not in r["stderr"], r["stderr"][-2000:]


def test_hub_ids_load_from_the_local_cache_without_the_network(after_local_use: Any) -> None:
    """Works without HF_HUB_OFFLINE too: a hub id in the local cache loads (its id names the
    cached revision), one that is not fails at once, with no download attempt or retries."""
    r = after_local_use
    assert r["hub_dim"] == 32
    assert r["hub_model"] == "tiny-org/tiny-model@rev-0123456789abcdef0123456789abcdef01234567"
    assert "nothing is downloaded" in r["missing"]
    assert r["missing_s"] < 15, r["missing_s"]
    assert "Retrying" not in r["stderr"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX only")
def test_forked_child_can_still_count_tokens(models: dict[str, Path]) -> None:
    """TOKENIZERS_PARALLELISM=true, set for the whole process, kept the tokenizer's thread pool
    on in a child of os.fork() (gunicorn --preload, multiprocessing), where its threads are
    gone: the child's first token count of a long batch hung for good. Unset, tokenizers turns
    its parallelism off in the child itself."""
    r = run_script(f"""
        import json, os, time
        from parallelrag import EmbeddingClient
        emb = EmbeddingClient.local({str(models["mean32"])!r}, truncate=True)
        texts = ["the cat sat " * 30 + str(i) for i in range(64)]  # over the limit: counted
        emb.embed_many(texts)
        pid = os.fork()
        if pid == 0:
            try:
                emb.embed_many(texts[::-1])
            finally:
                os._exit(0)
        for _ in range(150):
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, 9)
        print(json.dumps({{"child_done": bool(done)}}))
    """)
    assert r["child_done"], "the forked child hung counting tokens"


# ------------------------------------------------------------------ the user's torch work
def test_user_torch_work_beside_local_encoding(models: dict[str, Path]) -> None:
    """Works: the user's torch model in two threads (with torch.set_num_threads(1)) while two
    threads embed with a local model: no deadlock, the same vectors as alone, and the user's
    thread setting kept."""
    emb = EmbeddingClient.local(str(models["mean32"]))
    texts = [f"the cat sat {'a' * (i % 7)}" for i in range(40)]
    alone = emb.embed_many(texts)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lin = torch.nn.Linear(256, 256)
        errors: list[BaseException] = []
        got: dict[int, np.ndarray] = {}

        def user_torch() -> None:
            try:
                with torch.no_grad():
                    x = torch.randn(64, 256)
                    for _ in range(30):
                        x = torch.tanh(lin(x))
                assert torch.isfinite(x).all()
            except BaseException as exc:
                errors.append(exc)

        def ours(i: int) -> None:
            try:
                got[i] = emb.embed_many(texts[i:] + texts[:i])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=user_torch) for _ in range(2)]
        threads += [threading.Thread(target=ours, args=(i,)) for i in (0, 5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "deadlock"
        assert not errors, errors
        assert torch.get_num_threads() == 1
        assert np.allclose(got[0], alone, atol=1e-5)
        assert np.allclose(got[5], np.roll(alone, -5, axis=0), atol=1e-5)
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ the user's own function
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix, on purpose
def test_function_returning_torch_tensors() -> None:
    """A tensor that requires grad (the user forgot no_grad) failed every input with
    "Can't call numpy() on Tensor that requires grad", and a bfloat16 one was refused as "not
    an array-like of numbers"; float16, float64 lists and np.matrix already worked."""
    weight = torch.randn(8, requires_grad=True)
    texts = ["ok one", "ok two!", "three"]
    want = np.stack([(weight.detach() * len(t)).numpy() for t in texts]).astype(np.float32)

    def grad(ts: list[str]) -> Any:
        return torch.stack([weight * len(t) for t in ts])

    got = EmbeddingClient.from_function(grad, name="grad").embed_many(texts)
    assert got.dtype == np.float32 and np.allclose(got, want, atol=1e-6)
    bf16 = EmbeddingClient.from_function(lambda ts: grad(ts).detach().bfloat16(), name="bf16")
    assert np.allclose(bf16.embed_many(texts), want, rtol=2e-2, atol=1e-2)
    f16 = EmbeddingClient.from_function(lambda ts: grad(ts).detach().half(), name="f16")
    assert np.allclose(f16.embed_many(texts), want, rtol=2e-3, atol=1e-3)
    lists = EmbeddingClient.from_function(lambda ts: want[: len(ts)].astype(np.float64).tolist())
    assert np.allclose(lists.embed_many(texts), want)
    matrix = EmbeddingClient.from_function(lambda ts: np.asmatrix(want[: len(ts)]), name="m")
    assert np.allclose(matrix.embed_many(texts), want)


def test_function_non_finite_rows_fail_alone_naming_the_input() -> None:
    """Works: a NaN or inf row is an error for that input (named), never stored."""
    for bad in (np.nan, np.inf):
        emb = EmbeddingClient.from_function(
            lambda ts, bad=bad: np.array([[bad if "bad" in t else 1.0] * 4 for t in ts]))
        with pytest.raises(BatchError, match="input 1: the embedder returned a vector that is "
                                             "not finite"):
            emb.embed_many(["fine", "bad one", "also fine"])


def test_index_ranks_by_cosine_whatever_the_vectors_length(tmp_path: Path) -> None:
    """The stores rank by inner product, the cosine only for unit vectors; a function (or an
    OpenAI-compatible server) may return vectors of any length: a long vector pointing
    elsewhere outranked the exact match, with a "cosine" score of 6. A zero vector (cosine
    undefined) scores 0, not NaN."""
    table = {"apple": [1.0, 0.0, 0.0], "banana": [6.0, 8.0, 0.0], "zero": [0.0, 0.0, 0.0]}

    def fn(texts: list[str]) -> np.ndarray:
        return np.array([next(v for k, v in table.items() if k in t) for t in texts])

    emb = EmbeddingClient.from_function(fn, dim=3, name="lengths")
    with Index.open(tmp_path / "idx", embedder=emb) as index:
        index.ingest([Document(text=f"{w} {w} {w}", source=f"{w}.txt") for w in table])
        hits = index.search("apple?", k=3, mode="vector", rank_by="chunk")
    assert hits[0].source == "apple.txt", [(h.source, h.score) for h in hits]
    scores = {h.source: h.score for h in hits}
    assert scores["apple.txt"] == pytest.approx(1.0, abs=1e-5)
    assert scores["banana.txt"] == pytest.approx(0.6, abs=1e-5)
    assert scores.get("zero.txt", 0.0) == 0.0


def test_an_index_saved_before_model_fingerprints_still_opens(
        models: dict[str, Path], tmp_path: Path) -> None:
    """An index whose manifest holds a folder model's bare path (as saved before model ids
    named the folder's content) opens with that folder's model, as it did then."""
    import sqlite3

    folder = tmp_path / "model"
    shutil.copytree(models["mean32"], folder)
    idx_dir = tmp_path / "idx"
    with Index.open(idx_dir, embedder=f"local:{folder}") as index:
        index.ingest([Document(text="the cat sat on the mat", source="a.txt")])
        model_id = index.store.model_id
    old_id, _, tag = model_id.rpartition("@")
    assert old_id.endswith(str(folder)) and tag.startswith("sha256-"), model_id
    with sqlite3.connect(idx_dir / "store.sqlite") as db:
        db.execute("UPDATE manifest SET value = ? WHERE key = 'model_id'", (old_id,))
    with Index.open(idx_dir, create=False) as index:
        assert [h.source for h in index.search("the cat", k=1, mode="vector")] == ["a.txt"]
    # another model in the folder is not caught for such an old index, but any other path is
    other = tmp_path / "other"
    shutil.copytree(models["mean32"], other)
    with pytest.raises(Exception, match="was built with"):
        Index.open(idx_dir, embedder=f"local:{other}", create=False)
