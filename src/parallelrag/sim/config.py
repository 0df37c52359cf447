"""Configuration of the simulated provider server (:class:`SimConfig`).

Every field can be changed while the server runs (``SimServer.update(**changes)``,
``POST /sim/config``) and set from the command line (``--latency``, ``--rpm``, ...).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, fields
from typing import Any

from parallelrag.errors import ConfigError

__all__ = ["LatencyModel", "SimConfig", "parse_latency"]


@dataclass(frozen=True)
class LatencyModel:
    """A parsed latency distribution; :meth:`sample` draws one value in seconds (≥ 0).

    * ``fixed:S`` (or a bare number) — always ``S`` seconds;
    * ``uniform:A,B`` — uniform between ``A`` and ``B`` seconds;
    * ``lognormal:MEDIAN,SIGMA`` — ``MEDIAN * exp(SIGMA * N(0, 1))`` seconds.
    """

    kind: str
    a: float
    b: float = 0.0

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        # lognormal
        if self.a <= 0.0:
            return 0.0
        return self.a * math.exp(self.b * rng.gauss(0.0, 1.0))


def parse_latency(spec: str | float | int | None) -> LatencyModel:
    """Parse a latency spec (see :class:`LatencyModel`); raises :class:`ConfigError` if invalid."""
    if spec is None:
        return LatencyModel("fixed", 0.0)
    if isinstance(spec, bool):
        raise ConfigError(f"invalid latency {spec!r}")
    if isinstance(spec, int | float):
        if spec < 0 or not math.isfinite(spec):
            raise ConfigError(f"latency must be a finite number >= 0, got {spec!r}")
        return LatencyModel("fixed", float(spec))
    text = str(spec).strip().lower()
    kind, sep, rest = text.partition(":")
    try:
        if not sep:
            return parse_latency(float(text))
        nums = [float(x) for x in rest.split(",") if x.strip()]
    except ValueError as exc:
        raise ConfigError(f"invalid latency spec {spec!r}") from exc
    if any(n < 0 or not math.isfinite(n) for n in nums):
        raise ConfigError(f"latency parameters must be finite and >= 0: {spec!r}")
    if kind == "fixed" and len(nums) == 1:
        return LatencyModel("fixed", nums[0])
    if kind == "uniform" and len(nums) == 2 and nums[0] <= nums[1]:
        return LatencyModel("uniform", nums[0], nums[1])
    if kind == "lognormal" and len(nums) == 2:
        return LatencyModel("lognormal", nums[0], nums[1])
    raise ConfigError(
        f"invalid latency spec {spec!r}; use 'fixed:S', 'uniform:A,B', 'lognormal:MEDIAN,SIGMA' "
        "or a number of seconds"
    )


@dataclass(frozen=True)
class SimConfig:
    """Behaviour of the simulated server. All durations are seconds.

    Latency: ``latency`` (see :func:`parse_latency`) per request, plus ``per_token_s`` × tokens
    (prompt tokens for embeddings, completion tokens for chat); streams wait
    ``stream_token_s`` between chunks.

    Limits: ``rpm`` / ``tpm`` token buckets of capacity ``limit * rate_window_s / 60`` refilled at
    ``limit / 60`` per second (429 + OpenAI ``x-ratelimit-*`` headers); ``max_in_flight``
    concurrent requests, beyond which ``overload_status`` (429 or 503) is answered at once.

    Faults (probabilities per request, at most one per request): ``fault_500``, ``fault_503``,
    ``fault_timeout`` (hang ``timeout_hang_s`` first), ``fault_reset`` (connection reset, no
    response), ``fault_malformed`` (200 with invalid JSON), ``fault_truncate`` (stream or body cut
    off mid-way).

    Embeddings: ``embedding_dim`` default (``text-embedding-3-large``: 3072), ``max_inputs`` per
    request, ``max_input_tokens`` per input, ``max_request_tokens`` per request.

    ``api_key``: when set, requests must authenticate. ``seed`` seeds the latency/fault RNG.
    ``support_base64``: when False, ``encoding_format="base64"`` is rejected with 400.
    ``reply_words``: length of default chat replies (see :func:`parallelrag.sim.sim_reply`).
    """

    latency: str | float = 0.0
    per_token_s: float = 0.0
    stream_token_s: float = 0.0
    rpm: float | None = None
    tpm: float | None = None
    rate_window_s: float = 60.0
    max_in_flight: int | None = None
    overload_status: int = 429
    fault_500: float = 0.0
    fault_503: float = 0.0
    fault_timeout: float = 0.0
    timeout_hang_s: float = 30.0
    fault_reset: float = 0.0
    fault_malformed: float = 0.0
    fault_truncate: float = 0.0
    embedding_dim: int = 1536
    max_inputs: int = 2048
    max_input_tokens: int = 8192
    max_request_tokens: int = 300_000
    api_key: str | None = None
    seed: int = 0
    support_base64: bool = True
    reply_words: int = 12

    def __post_init__(self) -> None:
        self.validate()

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "api_key" and value is not None:
                value = "***"
            shown.append(f"{f.name}={value!r}")
        return f"SimConfig({', '.join(shown)})"

    def validate(self) -> None:
        """Raise :class:`ConfigError` if a field is out of range."""
        parse_latency(self.latency)
        for name in ("per_token_s", "stream_token_s", "timeout_hang_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        for name in ("rpm", "tpm"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ConfigError(f"{name} must be > 0 or None")
        if self.rate_window_s <= 0:
            raise ConfigError("rate_window_s must be > 0")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ConfigError("max_in_flight must be >= 1 or None")
        if self.overload_status not in (429, 503, 529):
            raise ConfigError("overload_status must be 429, 503 or 529")
        total = 0.0
        for name in (
            "fault_500",
            "fault_503",
            "fault_timeout",
            "fault_reset",
            "fault_malformed",
            "fault_truncate",
        ):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1]")
            total += p
        if total > 1.0 + 1e-9:
            raise ConfigError("fault probabilities must add up to at most 1")
        for name in ("embedding_dim", "max_inputs", "max_input_tokens", "max_request_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.reply_words < 1:
            raise ConfigError("reply_words must be >= 1")

    def replace(self, **changes: Any) -> SimConfig:
        """A copy with ``changes`` applied (unknown names raise :class:`ConfigError`)."""
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ConfigError(f"unknown SimConfig field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
