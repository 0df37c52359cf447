"""Configuration helpers: masked secrets, timeouts, environment look-ups.

Order of precedence everywhere: explicit arguments, then ``PARALLELRAG_*`` / provider env vars
(``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``ANTHROPIC_API_KEY``, ...), then defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigError, register_secret

__all__ = ["MaskedStr", "Secret", "Timeouts", "env", "secret_from"]


class Secret:
    """Holds a credential. Its repr and str are masked; only :meth:`get` reveals it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class MaskedStr(str):
    """A ``str`` that carries a credential on the wire (an ``authorization`` / ``api-key`` header
    value) but shows ``'***'`` as its repr.

    Header dicts hold these, so a dict printed by a debugger or a traceback that captures local
    variables (Sentry, rich, ``traceback.TracebackException(capture_locals=True)``) shows no key.
    Everything else is a plain ``str``: equality, ``str()``, formatting and ``encode()`` give the
    real value, which is what the HTTP client writes.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def secret_from(explicit: str | Secret | None, *env_names: str) -> Secret | None:
    """An explicit key, else the first env var set, else None.

    A key that could not travel in an HTTP header (not a string; a line break or another
    control character, as a key pasted with its newline has) is a :class:`ConfigError` here,
    naming where it came from but never showing it, rather than a failure at the first request.
    """
    if isinstance(explicit, Secret):
        return explicit
    if explicit is not None and not isinstance(explicit, str):
        raise ConfigError(f"api_key must be a string, not {type(explicit).__name__}")
    if explicit:
        return Secret(_header_safe(explicit, "api_key"))
    for name in env_names:
        value = env(name)
        if value:
            return Secret(_header_safe(value, name))
    return None


def _header_safe(value: str, where: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"{where} contains a line break or another control character "
                          "(a key must be one line: check for a trailing newline)")
    return value


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-request timeouts in seconds (None = no limit)."""

    connect: float | None = 10.0
    read: float | None = 120.0
    total: float | None = 600.0

    @classmethod
    def of(cls, value: Timeouts | float | None) -> Timeouts:
        if isinstance(value, Timeouts):
            return value
        if value is None:
            return cls()
        return cls(connect=min(10.0, float(value)), read=float(value), total=float(value))
