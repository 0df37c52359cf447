"""Token estimates used for batching and rate budgets when no exact tokenizer is configured."""

from __future__ import annotations

__all__ = ["estimate_tokens", "utf8_len"]


def utf8_len(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def estimate_tokens(text: str) -> int:
    """≈ tokens of a BPE tokenizer: ceil(UTF-8 bytes / 4), at least 1.

    This matches OpenAI's rule of thumb for English; the rate limiter corrects its budget from the
    ``usage`` the provider reports, so the estimate only has to be close, not exact.
    """
    n = utf8_len(text)
    return max(1, (n + 3) // 4)
