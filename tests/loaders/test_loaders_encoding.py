"""Decoding: BOMs, UTF-8, the cp1252 and detector fallbacks, binary and undecodable input."""

from __future__ import annotations

import codecs
import random

import pytest

from parallelrag.errors import LoaderError
from parallelrag.loaders import decode_text, encoding, looks_binary

FRENCH = "Le café était très “agréable” — naïve façade, déjà vu. Prix : 5 €.\n" * 3
RUSSIAN = "Привет, как дела? Это тестовый текст на русском языке, и он длинный.\n" * 3


def _random_text_free_bytes() -> bytes:
    rnd = random.Random(99)
    return bytes(rnd.randrange(1, 256) for _ in range(2000))


def test_utf8_and_boms() -> None:
    assert decode_text("héllo\r\nwörld\r".encode()) == "héllo\nwörld\n"
    assert decode_text(codecs.BOM_UTF8 + "héllo".encode()) == "héllo"
    assert decode_text(codecs.BOM_UTF16_LE + "héllo\n".encode("utf-16-le")) == "héllo\n"
    assert decode_text(codecs.BOM_UTF16_BE + "héllo".encode("utf-16-be")) == "héllo"
    assert decode_text(codecs.BOM_UTF32_LE + "héllo".encode("utf-32-le")) == "héllo"
    assert decode_text(b"a\r\nb", newlines=False) == "a\r\nb"


def test_utf16_with_bom_is_text_not_binary() -> None:
    data = codecs.BOM_UTF16_LE + "plain ascii\n".encode("utf-16-le")
    assert not looks_binary(data)
    assert looks_binary(b"abc\x00def")
    assert not looks_binary(b"abc" + b"x" * 9000 + b"\x00")


def test_binary_and_nul_after_sniff_window() -> None:
    with pytest.raises(LoaderError, match=r"^binary$"):
        decode_text(b"text\x00more")
    # a NUL after the first 8 KiB: still text, the NUL is dropped
    assert decode_text(b"a" * 9000 + b"\x00b") == "a" * 9000 + "b"
    # valid UTF-8 that is mostly control characters is binary in disguise
    with pytest.raises(LoaderError, match=r"^binary$"):
        decode_text(bytes(range(1, 8)) * 100)


def test_cp1252_fallback_decodes_western_text() -> None:
    assert decode_text(FRENCH.encode("cp1252")) == FRENCH
    de = "Über die Straße, schöne Grüße aus München.\n"
    assert decode_text(de.encode("cp1252")) == de


def test_detector_handles_cyrillic_that_cp1252_would_garble() -> None:
    assert decode_text(RUSSIAN.encode("cp1251")) == RUSSIAN


def test_declared_charset_wins_over_guessing() -> None:
    assert decode_text(RUSSIAN.encode("koi8_r"), declared="koi8-r") == RUSSIAN
    assert decode_text("café".encode("latin-1"), declared="ISO-8859-1") == "café"


def test_undecodable_with_detector() -> None:
    with pytest.raises(LoaderError, match=r"^undecodable"):
        decode_text(_random_text_free_bytes())


def test_fallbacks_without_charset_normalizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoding, "_load_detector", lambda: None)
    assert decode_text(FRENCH.encode("cp1252")) == FRENCH
    # cp1252 cannot decode 0x81; latin-1 can, and the result has only a few C1 controls
    data = ("Ångström " * 300).encode("latin-1") + b"\x81"
    assert decode_text(data) == "Ångström " * 300 + "\x81"
    # C1-control-heavy latin-1 output is rejected
    c1_heavy = b"ok \x81\x8d\x8f\x90\x9d" * 50
    with pytest.raises(LoaderError, match=r"^undecodable"):
        decode_text(c1_heavy)
    with pytest.raises(LoaderError, match=r"^undecodable"):
        decode_text(_random_text_free_bytes())


def test_invalid_utf16_after_bom() -> None:
    with pytest.raises(LoaderError, match=r"^undecodable: invalid utf-16-le"):
        decode_text(codecs.BOM_UTF16_LE + b"\x00\xd8")  # lone high surrogate


def test_mostly_utf8_with_a_bad_byte_keeps_the_text_with_replacements() -> None:
    """Issue 14: a UTF-8 file with one bad byte was dropped whole as undecodable (or garbled)."""
    good = "Größe und Gewicht: naïve café, déjà vu. " * 50
    data = good.encode() + b"\xff" + good.encode()
    text = decode_text(data)
    assert text == good + "\ufffd" + good
    encoding.replacements(reset=True)
    decode_text(data)
    assert encoding.replacements() == 1


def test_ascii_with_a_few_bad_bytes_is_not_read_in_a_code_page() -> None:
    """Issue 14: an ASCII file with a few bad bytes came back as `˙ţĂ(` (cp1250 guess)."""
    body = "The quick brown fox jumps over the lazy dog. " * 40
    data = body.encode() + b"\xff\xfe\xc3(" + body.encode()
    text = decode_text(data)
    assert text == body + "\ufffd\ufffd\ufffd(" + body
    assert "˙" not in text and "ţ" not in text
    encoding.replacements(reset=True)
    decode_text(data)
    assert encoding.replacements(reset=True) == 3
    assert encoding.replacements() == 0


def test_real_legacy_text_still_uses_its_code_page() -> None:
    assert decode_text(FRENCH.encode("cp1252")) == FRENCH
    russian = "Привет, как дела? Это обычный русский текст о погоде и книгах. " * 20
    assert decode_text(russian.encode("cp1251")) == russian
    encoding.replacements(reset=True)
    decode_text(russian.encode("cp1251"))
    assert encoding.replacements() == 0
