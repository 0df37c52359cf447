"""A caller's document with lone surrogates (text, metadata or id: what a broken JSON escape or
an ``os.fsdecode``'d name gives) is ingested with U+FFFD in their place and counted, never a
crash of the whole ingest (UTF-8 cannot store a lone surrogate)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_grouping import make_index


def test_lone_surrogates_in_caller_documents_are_replaced_and_counted(tmp_path: Path) -> None:
    with make_index(tmp_path) as index:
        report = index.ingest([
            ("good text one", {"id": "g1"}),
            ("bad \ud800 text", {"id": "t1"}),
            ("fine text", {"id": "m1", "note": "caf\udce9", "k\udce9y": 1}),
            ("fine text again", {"id": "caf\udce9"}),
        ])
        assert report.failed == []
        assert report.added == 4
        assert report.decode_replacements == 4
        docs = {d.source: d for d in index.store.documents()}
        assert set(docs) == {"g1", "t1", "m1", "caf\\xe9"}  # an id is spelled as file keys are
        assert docs["m1"].metadata["note"] == "caf\ufffd" and docs["m1"].metadata["k\ufffdy"] == 1
        hit = index.search("bad text", k=1, mode="keyword", where={"id": "t1"})[0]
        assert hit.text == "bad \ufffd text"
        # the same input again is unchanged (the key and hash are stable)
        again = index.ingest([("bad \ud800 text", {"id": "t1"})])
        assert again.unchanged == 1 and again.added == 0
        assert index.remove("caf\udce9")  # found by the same str it was ingested under
        assert "caf\\xe9" not in {d.source for d in index.store.documents()}


def test_a_store_that_fails_to_write_raises_a_store_error(tmp_path: Path) -> None:
    """A write the store cannot do (here: SQLite refusing the statement) surfaces as one
    StoreError naming what failed, not as an ExceptionGroup of the ingest's internal tasks."""
    import sqlite3

    import pytest

    from parallelrag.errors import StoreError
    from parallelrag.store import EmbeddedStore

    class Failing(EmbeddedStore):
        def replace_documents(self, items):  # type: ignore[no-untyped-def]
            raise sqlite3.OperationalError("disk I/O error")

    with make_index(tmp_path) as index:
        store = index.store
        assert isinstance(store, EmbeddedStore)
        store.__class__ = Failing
        with pytest.raises(StoreError, match="disk I/O error") as info:
            index.ingest([("some text", {"id": "a"})])
        assert not isinstance(info.value, BaseExceptionGroup)
        store.__class__ = EmbeddedStore
