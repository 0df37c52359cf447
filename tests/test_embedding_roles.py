"""Asymmetric embedding models (e5, bge, gte, nomic...): search queries and documents get their
own prompts. Local sentence-transformers models use the prompts in their configuration; any
embedder (a remote OpenAI-compatible server, a local model, a function) takes ``query_prompt=``
and ``document_prompt=``. Checked over real parts: tiny random sentence-transformers models
built here (nothing is downloaded) and the simulator, whose vectors are a function of the exact
text it received."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import model_helpers
from parallelrag import EmbeddingClient, Index, LlmClient
from parallelrag.cache import EmbeddingCache
from parallelrag.documents import Document
from parallelrag.errors import BadRequestError, ConfigError
from parallelrag.sim import SimServer, sim_embedding

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

KEY = "sk-embedding-roles-test-abcdef123456"
MODEL = "text-embedding-3-small"  # the sim serves any name; this one is counted with cl100k
DIM = 16
E5_QUERY, E5_PASSAGE = "query: ", "passage: "
BGE_QUERY = "Represent this sentence for searching relevant passages: "

def build_model(folder: Path, *, max_len: int = 64, seed: int = 0,
                prompts: dict[str, str] | None = None,
                default_prompt: str | None = None) -> Path:
    """A tiny random model folder (tests/model_helpers.py) whose ``prompts`` are written to its
    configuration exactly as given (a hub e5 model's file has only ``query`` and ``passage``),
    not with the empty ``query``/``document`` entries sentence-transformers adds when it saves."""
    model_helpers.build_model(folder, max_len=max_len, seed=seed, prompts=prompts,
                              default_prompt=default_prompt, raw_prompts=True)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("role-models")
    yield {
        "e5": build_model(root / "e5", prompts={"query": E5_QUERY, "passage": E5_PASSAGE}),
        "bge": build_model(root / "bge", prompts={"query": BGE_QUERY}),
        "plain": build_model(root / "plain", seed=1),
        "e5-short": build_model(root / "e5-short", max_len=16,
                                prompts={"query": E5_QUERY, "passage": E5_PASSAGE}),
    }


def reference(folder: Path, texts: list[str]) -> np.ndarray:
    """What sentence-transformers itself gives for exactly these texts, no prompt added."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    vecs = st.encode(texts, prompt="", normalize_embeddings=True, convert_to_numpy=True,
                     show_progress_bar=False)
    return np.asarray(vecs, dtype=np.float32)


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, atol=1e-5))


# ------------------------------------------------------------------ local models' own prompts
def test_local_model_embeds_each_side_with_its_own_prompt(models: dict[str, Path]) -> None:
    """e5 (``query``/``passage`` prompts, no default): a query gets "query: ", a document
    "passage: "; bge (only a ``query`` prompt): documents get no prompt."""
    texts = ["the cat sat on the mat", "a dog"]
    e5 = EmbeddingClient.local(str(models["e5"]))
    ref = reference(models["e5"], [E5_QUERY + t for t in texts] + [E5_PASSAGE + t for t in texts])
    q = e5.embed_queries(texts)
    d = e5.embed_many(texts)
    assert close(q, ref[:2]) and close(d, ref[2:])
    assert close(e5.embed_query(texts[0]), ref[0]) and close(e5.embed(texts[0]), ref[2])
    assert not close(q, d)  # the two sides really differ
    assert close(asyncio.run(e5.aembed_query(texts[1])), ref[1])
    assert close(asyncio.run(e5.aembed_queries(texts)), ref[:2])

    bge = EmbeddingClient.local(str(models["bge"]))
    ref = reference(models["bge"], [BGE_QUERY + texts[0], texts[0]])
    assert close(bge.embed_query(texts[0]), ref[0])
    assert close(bge.embed(texts[0]), ref[1])

    # a model without prompts: both sides are the same
    plain = EmbeddingClient.local(str(models["plain"]))
    assert close(plain.embed_query(texts[0]), plain.embed(texts[0]))


def test_given_prompts_replace_the_models_own(models: dict[str, Path]) -> None:
    """``query_prompt=``/``document_prompt=`` on a local model: for one without prompts in its
    configuration, and replacing the prompts of one that has them (through the spec too)."""
    t = "the cat sat"
    plain = EmbeddingClient.local(str(models["plain"]), query_prompt="search_query: ",
                                  document_prompt="search_document: ")
    ref = reference(models["plain"], ["search_query: " + t, "search_document: " + t])
    assert close(plain.embed_query(t), ref[0]) and close(plain.embed(t), ref[1])

    e5 = EmbeddingClient.from_url(f"local:{models['e5']}?query_prompt=q%3A%20")
    assert e5.query_prompt == "q: " and e5.document_prompt is None
    ref = reference(models["e5"], ["q: " + t, E5_PASSAGE + t])
    assert close(e5.embed_query(t), ref[0])
    assert close(e5.embed(t), ref[1])  # the document side keeps the model's own prompt


def test_local_limits_count_the_prompt_of_each_side(models: dict[str, Path]) -> None:
    """The limit (16 word pieces) counts the prompt actually used: "query: " is 6 pieces with
    this vocabulary, "passage: " 8. A text that fits after the query prompt but not after the
    passage prompt embeds as a query and fails as a document; truncation leaves room for the
    prompt of the side it cuts for."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(models["e5-short"] / "tokenizer.json"))

    def pieces(s: str) -> int:
        return len(tok.encode(s).ids)  # with [CLS] and [SEP]

    text = "the cat sat the cat sat the"
    assert pieces(E5_QUERY + text) <= 16 < pieces(E5_PASSAGE + text)
    emb = EmbeddingClient.local(str(models["e5-short"]))
    assert emb.embed_query(text).shape == (32,)
    with pytest.raises(BadRequestError, match="over the model's limit of 16"):
        emb.embed(text)
    long_prompt = "the cat sat on the mat: "
    assert pieces(long_prompt + text) > 16
    longer = EmbeddingClient.local(str(models["e5-short"]), query_prompt=long_prompt)
    with pytest.raises(BadRequestError, match="over the model's limit of 16"):
        longer.embed_query(text)

    cut = EmbeddingClient.local(str(models["e5-short"]), truncate=True)
    long_text = "the cat sat " * 10
    for role, prompt in (("document", E5_PASSAGE), ("query", E5_QUERY)):
        kept = cut._backend.truncate(long_text, 16, role)  # type: ignore[arg-type]
        assert kept and long_text.startswith(kept)
        assert pieces(prompt + kept) <= 16 < pieces(prompt + long_text[:len(kept) + 4])
    ref = reference(models["e5-short"],
                    [E5_QUERY + cut._backend.truncate(long_text, 16, "query")])
    assert close(cut.embed_query(long_text), ref[0])


# ------------------------------------------------------------------ remote: what the server got
def test_remote_prompts_reach_the_server(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.0)
    emb = EmbeddingClient.openai(MODEL, base_url=srv.url, api_key=KEY, dimensions=DIM,
                                 query_prompt=E5_QUERY, document_prompt=E5_PASSAGE)

    def sim(text: str) -> np.ndarray:
        return sim_embedding(MODEL, text, DIM)

    texts = ["alpha beta", "gamma"]
    assert close(emb.embed_query(texts[0]), sim(E5_QUERY + texts[0]))
    assert close(emb.embed_queries(texts), np.vstack([sim(E5_QUERY + t) for t in texts]))
    assert close(emb.embed(texts[1]), sim(E5_PASSAGE + texts[1]))
    assert close(emb.embed_many(texts), np.vstack([sim(E5_PASSAGE + t) for t in texts]))
    assert close(asyncio.run(emb.aembed_query("delta")), sim(E5_QUERY + "delta"))
    res = emb.embed_batch_parallel([["x", "y"], ["z"]])
    second = res.embeddings[1]
    assert res.ok and second is not None and close(second, sim(E5_PASSAGE + "z")[None, :])
    # a bge-style server: a query instruction, nothing before passages
    bge = EmbeddingClient.openai(MODEL, base_url=srv.url, api_key=KEY, dimensions=DIM,
                                 query_prompt=BGE_QUERY)
    assert close(bge.embed_query("x"), sim(BGE_QUERY + "x")) and close(bge.embed("x"), sim("x"))


def test_remote_limits_count_the_prompt(make_sim: Callable[..., SimServer]) -> None:
    from parallelrag.providers.tokens import counter_for

    srv = make_sim(latency=0.0)
    counter = counter_for(MODEL, "openai")
    text = "tokens " * 30
    limit = counter.count(text)
    assert counter.count(E5_QUERY + text) > limit
    emb = EmbeddingClient.openai(MODEL, base_url=srv.url, api_key=KEY, dimensions=DIM,
                                 max_input_tokens=limit, query_prompt=E5_QUERY)
    assert emb.embed(text).shape == (DIM,)  # no document prompt: it fits
    before = srv.stats()["requests"]
    with pytest.raises(BadRequestError, match=f"over the model's limit of {limit}"):
        emb.embed_query(text)
    assert srv.stats()["requests"] == before  # refused before any request
    cut = EmbeddingClient.openai(MODEL, base_url=srv.url, api_key=KEY, dimensions=DIM,
                                 max_input_tokens=limit, query_prompt=E5_QUERY, truncate=True)
    sent = counter.truncate(E5_QUERY + text, limit)  # what fits, the prompt first
    assert sent.startswith(E5_QUERY) and len(sent) < len(E5_QUERY + text)
    assert close(cut.embed_query(text), sim_embedding(MODEL, sent, DIM))


# ------------------------------------------------------------------ spec and identity
def test_prompts_round_trip_through_the_spec(make_sim: Callable[..., SimServer],
                                             models: dict[str, Path]) -> None:
    srv = make_sim(latency=0.0)
    emb = EmbeddingClient.openai(MODEL, base_url=srv.url, api_key=KEY, dimensions=DIM,
                                 query_prompt=BGE_QUERY, document_prompt="passage: ")
    again = EmbeddingClient.from_url(emb.spec, api_key=KEY)
    assert again.spec == emb.spec
    assert (again.query_prompt, again.document_prompt) == (BGE_QUERY, "passage: ")
    assert close(again.embed_query("x"), emb.embed_query("x"))
    s = again.settings()
    assert s["query_prompt"] == BGE_QUERY and s["document_prompt"] == "passage: "
    # percent-encoded by hand, as a user writes it
    typed = EmbeddingClient.from_url(
        f"openai://{MODEL}?base_url={srv.url}&dimensions={DIM}&query_prompt=query%3A%20")
    assert typed.query_prompt == E5_QUERY and typed.document_prompt is None
    # no prompts: the spec is what it always was
    assert "prompt" not in EmbeddingClient.openai(MODEL, base_url=srv.url, api_key=KEY).spec
    assert EmbeddingClient.local("minilm").spec == "minilm"

    local = EmbeddingClient.local(str(models["plain"]), query_prompt=E5_QUERY,
                                  document_prompt=E5_PASSAGE)
    back = EmbeddingClient.from_url(local.spec)
    assert (back.query_prompt, back.document_prompt) == (E5_QUERY, E5_PASSAGE)
    fn = EmbeddingClient.from_function(lambda t: np.ones((len(t), 2)), name="f",
                                       document_prompt=E5_PASSAGE)
    assert "document_prompt=passage%3A+" in fn.spec

    # the document prompt decides the stored vectors, the query prompt does not
    ident = EmbeddingClient.identity_of(emb.spec)
    assert ident["document_prompt"] == "passage: " and "query_prompt" not in ident
    other_query = EmbeddingClient.openai(MODEL, base_url=srv.url, api_key=KEY, dimensions=DIM,
                                         query_prompt="q: ", document_prompt="passage: ")
    assert other_query.identity == emb.identity
    other_doc = EmbeddingClient.openai(MODEL, base_url=srv.url, api_key=KEY, dimensions=DIM,
                                       query_prompt=BGE_QUERY)
    assert other_doc.identity != emb.identity
    with pytest.raises(ConfigError, match="query_prompt must be a str"):
        EmbeddingClient.openai(MODEL, base_url=srv.url, api_key=KEY, query_prompt=3)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the cache
def test_cache_keeps_prompted_sides_apart(make_sim: Callable[..., SimServer],
                                          tmp_path: Path) -> None:
    srv = make_sim(latency=0.0)
    cache = EmbeddingCache(tmp_path / "cache")

    def client(**kw: Any) -> EmbeddingClient:
        return EmbeddingClient.openai(MODEL, base_url=srv.url, api_key=KEY, dimensions=DIM,
                                      cache=cache, **kw)

    def sim(text: str) -> np.ndarray:
        return sim_embedding(MODEL, text, DIM)

    bare = client()
    assert close(bare.embed("x"), sim("x"))  # the cache now holds the unprompted vector
    prompted = client(query_prompt=E5_QUERY, document_prompt=E5_PASSAGE)
    n = srv.stats()["embedding_inputs"]
    assert close(prompted.embed("x"), sim(E5_PASSAGE + "x"))  # not the cached bare one
    assert close(prompted.embed_query("x"), sim(E5_QUERY + "x"))  # nor the document one
    assert srv.stats()["embedding_inputs"] == n + 2
    # each side is cached under its own prompt
    again = client(query_prompt=E5_QUERY, document_prompt=E5_PASSAGE)
    assert close(again.embed("x"), sim(E5_PASSAGE + "x"))
    assert close(again.embed_query("x"), sim(E5_QUERY + "x"))
    assert srv.stats()["embedding_inputs"] == n + 2 and again.stats()["cache_hits"] == 2
    # a query without a prompt gives the same vector as a bare document: shared, correctly
    doc_only = client(document_prompt=E5_PASSAGE)
    assert close(doc_only.embed_query("x"), sim("x"))
    assert srv.stats()["embedding_inputs"] == n + 2


def test_local_cache_keeps_query_and_document_vectors_apart(models: dict[str, Path],
                                                            tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    t = "the cat"
    ref = reference(models["e5"], [E5_QUERY + t, E5_PASSAGE + t])
    first = EmbeddingClient.local(str(models["e5"]), cache=cache)
    assert close(first.embed(t), ref[1])
    assert close(first.embed_query(t), ref[0])
    second = EmbeddingClient.local(str(models["e5"]), cache=cache)
    assert close(second.embed_query(t), ref[0]) and close(second.embed(t), ref[1])
    assert second.stats()["cache_hits"] == 2
    # another query prompt: its own entries
    other = EmbeddingClient.local(str(models["e5"]), cache=cache, query_prompt="q: ")
    assert close(other.embed_query(t), reference(models["e5"], ["q: " + t])[0])
    assert other.stats()["cache_hits"] == 0


# ------------------------------------------------------------------ an index
class TopicModel:
    """An asymmetric toy model: with its prompts ("query: ", "passage: ") a text lands on its
    topic's axis; a bare query lands on the other topic's (as an e5 query embedded without its
    prompt drifts). Records every text it is given."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            self.seen.extend(texts)
        out = np.zeros((len(texts), 3), dtype=np.float32)
        for i, t in enumerate(texts):
            prompted = t.startswith((E5_QUERY, E5_PASSAGE))
            topic = 0 if "apple" in t else 1
            out[i, topic if prompted else 1 - topic] = 1.0
            out[i, 2] = 0.1
        return out


def _topic_index(path: Path, emb: EmbeddingClient) -> Index:
    index = Index.open(path, embedder=emb)
    index.ingest([Document(text="apple orchards and apple pie", source="apples.txt"),
                  Document(text="engine torque and gearboxes", source="engines.txt")])
    return index


def test_index_searches_with_the_query_prompt(tmp_path: Path,
                                              make_sim: Callable[..., SimServer]) -> None:
    model = TopicModel()
    emb = EmbeddingClient.from_function(model, name="topic", query_prompt=E5_QUERY,
                                        document_prompt=E5_PASSAGE)
    with _topic_index(tmp_path / "idx", emb) as index:
        assert all(t.startswith(E5_PASSAGE) for t in model.seen)  # ingest: the document side
        model.seen.clear()
        hits = index.search("apple", k=1, mode="vector")
        assert hits[0].source == "apples.txt"
        assert model.seen == [E5_QUERY + "apple"]
        hits = asyncio.run(index.asearch("which apple", k=1, mode="hybrid"))
        assert hits[0].source == "apples.txt"
        assert model.seen[-1] == E5_QUERY + "which apple"
        srv = make_sim(latency=0.0)
        llm = LlmClient.openai("chat", base_url=srv.url, api_key=KEY)
        index.answer("apple pie?", llm=llm, k=1, mode="vector")
        assert model.seen[-1] == E5_QUERY + "apple pie?"
    # the same model with its query embedded as a document ranks the wrong document first
    sym = EmbeddingClient.from_function(TopicModel(), name="topic-sym",
                                        document_prompt=E5_PASSAGE)
    with _topic_index(tmp_path / "idx-sym", sym) as index:
        assert index.search("apple", k=1, mode="vector")[0].source == "engines.txt"


def test_index_refuses_another_document_prompt_but_takes_another_query_prompt(
        tmp_path: Path) -> None:
    def fn(**kw: Any) -> EmbeddingClient:
        return EmbeddingClient.from_function(TopicModel(), name="topic", **kw)

    with _topic_index(tmp_path / "idx", fn(query_prompt=E5_QUERY,
                                           document_prompt=E5_PASSAGE)):
        pass
    # another query prompt: the stored vectors are unchanged, the index opens (and saves it)
    with Index.open(tmp_path / "idx", embedder=fn(query_prompt="search: ",
                                                  document_prompt=E5_PASSAGE)) as index:
        assert index.embedder.query_prompt == "search: "
        assert index.config()["embedder"].count("query_prompt=search%3A+") == 1
    for other in ({"document_prompt": "doc: "}, {}):
        with pytest.raises(ConfigError, match="document_prompt"):
            Index.open(tmp_path / "idx", embedder=fn(query_prompt=E5_QUERY, **other))
        # nor with rebuild=True: the chunks would keep vectors made with the old prompt (files
        # unchanged are not re-embedded, and vectors are reused by chunk text)
        with pytest.raises(ConfigError, match="document_prompt"):
            Index.open(tmp_path / "idx", embedder=fn(query_prompt=E5_QUERY, **other),
                       rebuild=True)


def test_index_reopens_with_the_saved_prompts(tmp_path: Path, models: dict[str, Path]) -> None:
    spec = f"local:{models['plain']}?query_prompt=query%3A%20&document_prompt=passage%3A%20"
    with Index.open(tmp_path / "idx", embedder=spec) as index:
        index.ingest([Document(text="the cat sat on the mat", source="a.txt")])
    with Index.open(tmp_path / "idx", create=False) as index:
        assert index.embedder.query_prompt == E5_QUERY
        assert index.embedder.document_prompt == E5_PASSAGE
        hit = index.search("the cat", k=1, mode="vector")[0]
        ref = reference(models["plain"], [E5_QUERY + "the cat", E5_PASSAGE + hit.text])
        assert hit.score == pytest.approx(float(ref[0] @ ref[1]), abs=1e-4)
    with pytest.raises(ConfigError, match="document_prompt"):
        Index.open(tmp_path / "idx", embedder=f"local:{models['plain']}")
