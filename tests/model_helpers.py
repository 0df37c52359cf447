"""Tiny random sentence-transformers models, built offline for the tests of the user's own
models (nothing is downloaded): a one-layer BERT with a word-piece vocabulary written here."""

from __future__ import annotations

import json
from pathlib import Path

VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog", "sat", "mat", "."]
         + list("abcdefghijklmnopqrstuvwxyz:") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"])


def build_model(folder: Path, *, dim: int = 32, pooling: str = "mean", max_len: int = 32,
                seed: int = 0, prompts: dict[str, str] | None = None,
                default_prompt: str | None = None, raw_prompts: bool = False) -> Path:
    """A tiny random BERT saved as a sentence-transformers folder at ``folder``, without a
    Normalize module; returns the plain transformers folder (config + weights + tokenizer) it
    was made from, ``folder``-plain beside it.

    ``prompts`` / ``default_prompt`` go through sentence-transformers, which adds empty
    ``query``/``document`` entries when it saves; with ``raw_prompts`` they are written to the
    saved configuration exactly as given instead (as a hub e5 model's file has only ``query`` and
    ``passage``)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    plain = folder.parent / f"{folder.name}-plain"
    plain.mkdir(parents=True)
    # transformers 5 takes the word pieces as ``vocab`` (it ignores a ``vocab_file``)
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}, model_max_length=max_len)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=dim, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=2 * dim,
                     max_position_embeddings=512)
    BertModel(cfg).save_pretrained(plain)
    tok.save_pretrained(plain)
    given = {} if raw_prompts else {"prompts": prompts, "default_prompt_name": default_prompt}
    st = SentenceTransformer(
        modules=[Transformer(str(plain), max_seq_length=max_len), Pooling(dim, pooling_mode=pooling)],
        device="cpu", **given,
    )
    st.save(str(folder))
    if raw_prompts:
        conf_file = folder / "config_sentence_transformers.json"
        conf = json.loads(conf_file.read_text())
        conf["prompts"] = dict(prompts or {})
        conf["default_prompt_name"] = default_prompt
        conf_file.write_text(json.dumps(conf))
    return plain
