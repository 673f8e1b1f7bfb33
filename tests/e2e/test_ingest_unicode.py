"""Names in Bengali, Chinese and Arabic come back byte for byte, from the API and in lead.received.

The running ingest process (uvicorn, its own store, the real broker) receives each name as raw UTF-8, in JSON
and in a browser-style form body, and must hand back exactly the code points it was sent: no Unicode
normalization (NFC would rewrite Bengali U+09DF into two code points), no lost joiners, no escaping games.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from common.envelope import Event
from common.topics import LEADS_RECEIVED
from tests.support.stack import ADMIN, Stack, read_topic, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

# U+09DF (BENGALI LETTER YYA) is a composition exclusion: NFC would turn it into U+09AF U+09BC.
BENGALI = {"first_name": "সুমাই\u09dfা", "last_name": "রহমান", "company": "র\u200d্যাব ইন্ডাস্ট্রিজ"}
# Family name first, written without a space: only the full name can be kept.
CHINESE = {"full_name": "欧阳娜娜", "company": "北京字节跳动科技有限公司", "city": "北京"}
# ZWNJ (U+200C) inside a Persian word, and an Arabic name with a particle.
ARABIC = {
    "first_name": "محمد",
    "last_name": "عبد الله",
    "message": "می\u200cخواهم يوماً تجريبياً",  # noqa: RUF001 - Arabic letters, on purpose
}
NAMES = {"bengali": BENGALI, "chinese": CHINESE, "arabic": ARABIC}


@pytest.fixture(params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, make_stack: Callable[..., Stack]) -> Stack:
    urls = {"ingest": request.getfixturevalue("pg_database")} if request.param == "postgres" else None
    stack = make_stack(database_urls=urls)
    stack["ingest"].start()  # this test needs ingest and the broker only
    return stack


def _post(client: httpx.Client, stack: Stack, fields: dict[str, str], *, as_form: bool) -> str:
    if as_form:
        body, content_type = urlencode(fields).encode("ascii"), "application/x-www-form-urlencoded"
    else:
        body, content_type = json.dumps(fields, ensure_ascii=False).encode("utf-8"), "application/json"
    response = client.post(
        f"{stack['ingest'].url}/v1/leads", content=body, headers={**ADMIN, "Content-Type": content_type}
    )
    assert response.status_code == 202, response.text
    lead_id: str = response.json()["lead_id"]
    return lead_id


def _same_bytes(sent: dict[str, str], got: dict[str, Any]) -> None:
    for name, value in sent.items():
        assert isinstance(got[name], str), (name, got[name])
        assert got[name].encode("utf-8") == value.encode("utf-8"), (name, ascii(got[name]), ascii(value))


def test_bengali_chinese_and_arabic_names_come_back_byte_for_byte(stack: Stack) -> None:
    posted: dict[str, dict[str, str]] = {}
    with httpx.Client(timeout=10) as client:
        for script, names in NAMES.items():
            for as_form in (False, True):
                fields = {**names, "email": f"{script}.{'form' if as_form else 'json'}@example.org"}
                posted[_post(client, stack, fields, as_form=as_form)] = fields

        for lead_id, fields in posted.items():
            response = client.get(f"{stack['ingest'].url}/v1/leads/{lead_id}", headers=ADMIN)
            assert response.status_code == 200
            _same_bytes(fields, response.json()["lead"])
            for value in fields.values():
                assert value.encode("utf-8") in response.content  # sent as UTF-8, not \\u-escaped

    def published() -> list[Any]:
        records = asyncio.run(read_topic(stack.bootstrap, stack.topic(LEADS_RECEIVED), timeout=3))
        return records if len(records) >= len(posted) else []

    records = wait_until(published, timeout=60, interval=0.5, what="every lead.received")
    events = {Event.from_record(r.key, r.value, r.headers).subject: r for r in records}
    assert set(events) == set(posted)
    for lead_id, fields in posted.items():
        record = events[lead_id]
        _same_bytes(fields, Event.from_record(record.key, record.value, record.headers).data["lead"])
        for value in fields.values():
            assert value.encode("utf-8") in record.value
