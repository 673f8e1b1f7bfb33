"""The durable floor's bookkeeping (bench.durable.Store) without a broker: dedupe, outbox life, webhook signing."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import orjson
from bench.durable import Incoming, Outgoing, Store, forward_headers, sign


def _record(event_id: bytes, key: bytes = b"k") -> Incoming:
    return Incoming(event_id, key, b'{"v":1}', [("ce_id", event_id), ("t0", b"12.5")])


def _emit(record: Incoming) -> Outgoing:
    return ("out", record.key, record.value, forward_headers(record))


def _outbox_ids(store: Store) -> list[int]:
    return [row[0] for row in store.pending()]


def test_a_seen_event_id_is_skipped(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    fresh, rows = store.round([_record(b"a"), _record(b"b")], _emit)
    assert [r.id for r in fresh] == [b"a", b"b"] and len(rows) == 2

    fresh, rows = store.round([_record(b"b"), _record(b"c"), _record(b"c")], _emit)

    assert [r.id for r in fresh] == [b"c"]
    assert len(rows) == 1


def test_seen_ids_survive_a_restart(tmp_path: Path) -> None:
    Store(tmp_path / "s.db").round([_record(b"a")], _emit)

    fresh, _rows = Store(tmp_path / "s.db").round([_record(b"a")], _emit)

    assert fresh == []


def test_outbox_rows_are_deleted_only_after_their_publish(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    _fresh, first = store.round([_record(b"a"), _record(b"b")], _emit)
    store.round([_record(b"c")], _emit)  # the first round's rows not yet published: they stay
    assert _outbox_ids(store) == [1, 2, 3]

    store.mark_published(first)
    assert _outbox_ids(store) == [1, 2, 3]  # deleted by the next transaction, not at once
    store.round([], None)

    assert _outbox_ids(store) == [3]


def test_a_restarted_store_finds_its_unpublished_rows_and_numbers_after_them(tmp_path: Path) -> None:
    Store(tmp_path / "s.db").round([_record(b"a")], _emit)

    store = Store(tmp_path / "s.db")
    _fresh, rows = store.round([_record(b"b")], _emit)

    assert _outbox_ids(store) == [1, 2]
    assert rows[0][0] == 2


def test_the_outgoing_event_gets_a_new_id_and_keeps_t0(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    _fresh, rows = store.round([_record(b"a")], _emit)

    headers = dict(orjson.loads(rows[0][4]))

    assert headers["t0"] == "12.5"
    assert headers["ce_id"] != "a"


def test_attempts_are_recorded_in_the_next_round(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.round([], None, attempts=[(b"w1", 200, 1.5)])

    assert store.db.execute("SELECT id, status FROM attempts").fetchall() == [(b"w1", 200)]


def test_signature_is_standard_webhooks_hmac_over_id_timestamp_body() -> None:
    expected = hmac.new(b"s3cret", b"msg_1.1700000000.{}", hashlib.sha256).digest()

    assert sign("msg_1", 1700000000, b"{}", b"s3cret") == "v1," + base64.b64encode(expected).decode()
