"""Bytes → text: UTF-8 first, then a legacy encoding only when the bytes really are one.

Order of attempts (:func:`decode_text`):

1. a byte-order mark (UTF-8, UTF-16, UTF-32) decides;
2. a NUL byte in the first 8 KiB means binary, unless the bytes are UTF-16 without a
   byte-order mark (one byte lane NUL, the other not: Latin text from Windows exports);
3. strict UTF-8;
4. **mostly UTF-8**: when the file has at least as many valid multi-byte UTF-8 characters as
   invalid bytes, it is UTF-8 with a few damaged bytes: decoded with U+FFFD replacement
   characters (counted, see :func:`replacements`), not re-read in a code page;
5. an encoding the document declares (HTML ``<meta charset>``), if it decodes cleanly;
6. cp1252 (Windows Western, a superset of printable latin-1), when the result reads like
   Western text: non-ASCII letters come alone or in pairs (``café``, ``Größe``), not in long
   runs as they do when Cyrillic or Greek bytes are read as cp1252;
7. **ASCII with a few bad bytes** (under 2% of the bytes are non-ASCII): UTF-8 with replacement
   characters; a guessed code page would turn the stray bytes into letters (``˙ţĂ``);
8. charset-normalizer's best guess, if the package is installed;
   without it, cp1252 or latin-1 as a last resort;

and every fallback result is rejected when it is heavy in control characters. A replacement
decode is used only while at most 1% of the characters are replaced. When nothing fits the file
is reported as undecodable.
"""

from __future__ import annotations

import codecs
import re
import threading
from types import ModuleType

from ..errors import LoaderError

__all__ = ["BINARY_SNIFF_BYTES", "decode_text", "looks_binary", "replacements"]

BINARY_SNIFF_BYTES = 8192

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Control characters that do not occur in text: C0 except \t \n \v \f \r, backspace and ESC
# (ANSI colours in logs), DEL, C1, and the replacement character.
_CONTROL = re.compile("[\x01-\x07\x0e-\x1a\x1c-\x1f\x7f-\x9f\ufffd]")
_SAMPLE_CHARS = 65536
_MAX_CONTROL_UTF8 = 0.10  # valid UTF-8 with more than this is binary in disguise
_MAX_CONTROL_FALLBACK = 0.005
# A run of 3+ non-ASCII letters: normal in Cyrillic/Greek read as cp1252, rare in Western text.
_NON_ASCII_RUN = re.compile(r"[^\W\d_\x00-\x7f]{3,}")
_NON_ASCII_LETTER = re.compile(r"[^\W\d_\x00-\x7f]")
_MAX_RUN_SHARE = 0.3
_SPARSE_NON_ASCII = 0.02  # share of non-ASCII bytes under which stray bytes are damage, not text
_counter = threading.local()


def add_replacements(n: int) -> None:
    """Count ``n`` replacement characters put in by a loader (see :func:`replacements`)."""
    _counter.n = int(getattr(_counter, "n", 0)) + n


def replacements(reset: bool = False) -> int:
    """Replacement characters inserted by :func:`decode_text` in this thread so far (for bad
    bytes of a mostly-UTF-8 file); ``reset`` sets the count back to zero after reading it."""
    n = int(getattr(_counter, "n", 0))
    if reset:
        _counter.n = 0
    return n


def _replaced(data: bytes) -> tuple[str, int] | None:
    """UTF-8 with U+FFFD for bad bytes, and how many were replaced; None when it is not text."""
    text = data.decode("utf-8", "replace")
    n = text.count("\ufffd") - data.count("\ufffd".encode())
    if _control_share(text.replace("\ufffd", "")) > _MAX_CONTROL_FALLBACK:
        return None
    if n > max(16, len(text) // 100):  # more than 1% damaged: not "a few bad bytes"
        return None
    return text, n


def _multibyte_chars(data: bytes) -> int:
    """Valid multi-byte UTF-8 characters in ``data`` (U+FFFD itself excluded)."""
    text = data.decode("utf-8", "replace")
    return sum(1 for ch in text if ch > "\x7f" and ch != "\ufffd")


_WHATWG_ALIASES = {"iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
                   "us-ascii": "cp1252", "ascii": "cp1252", "iso8859-1": "cp1252"}


def _load_detector() -> ModuleType | None:
    """charset-normalizer, or None when it is not installed (tests replace this function)."""
    try:
        import charset_normalizer
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return charset_normalizer


def looks_binary(data: bytes) -> bool:
    """True when ``data`` has a NUL byte in its first 8 KiB and no UTF-16/32 byte-order mark."""
    head = data[:BINARY_SNIFF_BYTES]
    if b"\x00" not in head:
        return False
    return not any(data.startswith(bom) for bom, enc in _BOMS if enc != "utf-8")


def _control_share(text: str) -> float:
    sample = text[:_SAMPLE_CHARS]
    if not sample:
        return 0.0
    return len(_CONTROL.findall(sample)) / len(sample)


def _reads_western(text: str) -> bool:
    sample = text[:_SAMPLE_CHARS]
    letters = len(_NON_ASCII_LETTER.findall(sample))
    if letters == 0:
        return True
    in_runs = sum(len(m) for m in _NON_ASCII_RUN.findall(sample))
    return in_runs / letters <= _MAX_RUN_SHARE


def _try(data: bytes, encoding: str) -> str | None:
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None
    return text if _control_share(text) <= _MAX_CONTROL_FALLBACK else None


def _detect(data: bytes) -> str | None:
    detector = _load_detector()
    if detector is None:
        return _try(data, "cp1252") or _try(data, "latin-1")
    best = detector.from_bytes(data).best()
    if best is None or best.encoding is None:
        return None
    if best.encoding.startswith(("utf_16", "utf_32")) and b"\x00" not in data:
        return None  # UTF-16/32 without a BOM and without NULs is a misdetection
    return _try(data, best.encoding)


_UTF16_MIN_ZERO_SHARE = 0.9


def _bomless_utf16(data: bytes) -> str | None:
    """UTF-16 text without a byte-order mark (Windows exports), or None. Its NULs are the high
    bytes of Latin characters: at least 90% of one byte lane of the first 8 KiB is NUL and the
    other lane has none, which 8-bit text with a stray NUL never shows; the decode must be
    strict and, like every fallback, not heavy in control characters (tables of small
    16-bit numbers have the same NUL pattern)."""
    head = data[:BINARY_SNIFF_BYTES]
    if len(data) % 2 or len(head) < 16:
        return None
    for encoding, zeros, chars in (("utf-16-le", head[1::2], head[0::2]),
                                   ("utf-16-be", head[0::2], head[1::2])):
        if b"\x00" not in chars and zeros.count(0) >= _UTF16_MIN_ZERO_SHARE * len(zeros):
            return _try(data, encoding)
    return None


def _finish(text: str, newlines: bool) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "")
    if newlines and "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _finish_replaced(replaced: tuple[str, int], newlines: bool) -> str:
    text, n = replaced
    _counter.n = int(getattr(_counter, "n", 0)) + n
    return _finish(text, newlines)


def decode_text(data: bytes, *, declared: str | None = None, newlines: bool = True) -> str:
    """Decode a file's bytes to text (see the module docstring for the order of attempts).

    ``declared`` is an encoding the document names itself (e.g. HTML ``<meta charset>``).
    With ``newlines`` (the default) CRLF and CR line ends become ``\\n``. Bad bytes kept as
    U+FFFD are added to this thread's :func:`replacements` count.
    Raises :class:`LoaderError` with the message ``"binary"`` or ``"undecodable: ..."``.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _finish(data[len(bom):].decode(encoding), newlines)
            except UnicodeDecodeError as exc:
                raise LoaderError(f"undecodable: invalid {encoding} after its byte-order mark") from exc
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        utf16 = _bomless_utf16(data)
        if utf16 is None:
            raise LoaderError("binary", failed=False)
        return _finish(utf16, newlines)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if _control_share(text) > _MAX_CONTROL_UTF8:
            raise LoaderError("binary", failed=False)
        return _finish(text, newlines)
    bad = data.decode("utf-8", "replace").count("\ufffd")
    replaced: tuple[str, int] | None = None
    if _multibyte_chars(data) >= bad:
        replaced = _replaced(data)
        if replaced is not None:
            return _finish_replaced(replaced, newlines)
    if declared:
        name = declared.strip().lower()
        name = _WHATWG_ALIASES.get(name, name)
        text_or_none = _try(data, name)
        if text_or_none is not None:
            return _finish(text_or_none, newlines)
    text_or_none = _try(data, "cp1252")
    if text_or_none is not None and _reads_western(text_or_none):
        return _finish(text_or_none, newlines)
    non_ascii = sum(1 for b in data if b > 0x7F)
    if non_ascii <= len(data) * _SPARSE_NON_ASCII:
        replaced = _replaced(data)
        if replaced is not None:
            return _finish_replaced(replaced, newlines)
    text_or_none = _detect(data)
    if text_or_none is not None:
        return _finish(text_or_none, newlines)
    raise LoaderError("undecodable: not UTF-8 and no fallback encoding fits")
