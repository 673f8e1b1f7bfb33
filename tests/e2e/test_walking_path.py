"""The lead's whole path through real processes: ingest -> Kafka -> scoring -> Kafka -> routing."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from common.envelope import Event
from common.topics import LEADS_ASSIGNED, LEADS_RECEIVED, LEADS_SCORED
from tests.support.contracts import validate_record
from tests.support.stack import (
    ADMIN,
    Broker,
    Stack,
    free_port,
    post_lead,
    produce_raw,
    read_topic,
    routed,
    sample_lead,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


def _wait_all_routed(client: httpx.Client, stack: Stack, lead_ids: list[str], timeout: float = 120) -> dict[str, dict]:
    found: dict[str, dict] = {}

    def done() -> bool:
        missing = [lead_id for lead_id in lead_ids if lead_id not in found]
        found.update(routed(client, stack["routing"], missing))
        return len(found) == len(lead_ids)

    try:
        wait_until(done, timeout=timeout, interval=0.5, what=f"{len(lead_ids)} leads routed")
    except AssertionError:
        raise AssertionError(f"{len(lead_ids) - len(found)} of {len(lead_ids)} leads were never routed") from None
    return found


def _assert_assigned_exactly_once(records: dict[str, dict]) -> Counter[str]:
    per_rep: Counter[str] = Counter()
    for lead_id, record in records.items():
        assert len(record["assignments"]) == 1, f"{lead_id} has {len(record['assignments'])} assignments"
        current = record["current_assignment"]
        assert current is not None and current["outcome"] == "assigned" and current["rep_id"], record
        per_rep[current["rep_id"]] += 1
    return per_rep


def test_200_leads_each_get_exactly_one_assignment_spread_evenly(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack().start()
    with httpx.Client(timeout=10) as client:
        lead_ids = []
        for i in range(200):
            response = post_lead(client, stack["ingest"], sample_lead(i))
            assert response.status_code == 202, response.text
            lead_ids.append(response.json()["lead_id"])
        records = _wait_all_routed(client, stack, lead_ids)
    per_rep = _assert_assigned_exactly_once(records)
    assert set(per_rep) == {"r1", "r2", "r3", "r4"}
    assert max(per_rep.values()) - min(per_rep.values()) <= 1, per_rep
    # The decision is explained: the rule, the candidates and why the chosen rep won.
    sample = records[lead_ids[0]]["current_assignment"]
    assert sample["rule_id"] == "everyone" and sample["reason"] and len(sample["candidates"]) == 4

    # Every event this run produced honours the contracts in schemas/.
    checked: Counter[str] = Counter()
    for topic in (LEADS_RECEIVED, LEADS_SCORED, LEADS_ASSIGNED):
        for record in asyncio.run(read_topic(stack.bootstrap, stack.topic(topic))):
            problems = validate_record(
                record.topic, record.key, record.value, record.headers, namespace=stack.namespace
            )
            assert not problems, (topic, problems)
            checked[topic] += 1
    assert checked == {LEADS_RECEIVED: 200, LEADS_SCORED: 200, LEADS_ASSIGNED: 200}


def test_scoring_killed_mid_stream_loses_and_duplicates_nothing(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack().start()
    lead_ids: list[str] = []
    errors: list[str] = []

    def post_all() -> None:
        with httpx.Client(timeout=10) as client:
            for i in range(500):
                response = post_lead(client, stack["ingest"], sample_lead(i))
                if response.status_code != 202:
                    errors.append(response.text)
                else:
                    lead_ids.append(response.json()["lead_id"])

    poster = threading.Thread(target=post_all)
    poster.start()
    wait_until(lambda: len(lead_ids) >= 120, timeout=60, what="a stream of leads flowing")
    stack["scoring"].kill(signal.SIGKILL)
    wait_until(lambda: len(lead_ids) >= 250, timeout=60, what="more leads while scoring is down")
    stack["scoring"].start()
    poster.join()
    assert not errors
    assert len(lead_ids) == 500
    with httpx.Client(timeout=10) as client:
        records = _wait_all_routed(client, stack, lead_ids, timeout=180)
    per_rep = _assert_assigned_exactly_once(records)
    assert sum(per_rep.values()) == 500


def test_ingest_accepts_while_the_broker_is_down_and_everything_flows_when_it_returns(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    port = free_port()
    own = Broker(port=port, data_dir=tmp_path / "kafka")
    own.start()
    try:
        stack = make_stack(bootstrap=own.bootstrap).start()
        with httpx.Client(timeout=10) as client:
            first = [post_lead(client, stack["ingest"], sample_lead(i)).json()["lead_id"] for i in range(5)]
            _wait_all_routed(client, stack, first)

            own.stop()
            during, slowest = [], 0.0
            for i in range(20):
                started = time.perf_counter()
                response = post_lead(client, stack["ingest"], sample_lead(100 + i))
                slowest = max(slowest, time.perf_counter() - started)
                assert response.status_code == 202, response.text
                during.append(response.json()["lead_id"])
            print(f"slowest 202 while the broker was down: {slowest * 1000:.1f} ms")
            assert httpx.get(f"{stack['ingest'].url}/readyz").json()["checks"]["outbox_backlog"] >= 1

            own.start()
            records = _wait_all_routed(client, stack, first + during, timeout=180)
        _assert_assigned_exactly_once(records)
    finally:
        own.stop()


def test_a_record_that_is_not_json_is_dead_lettered_and_the_next_lead_flows(
    make_stack: Callable[..., Stack], kafka_bootstrap: str
) -> None:
    stack = make_stack().start()
    poison_id = str(uuid.uuid4())
    headers = Event(type="lead.received", source="/tests", subject="poison", data={}, id=poison_id).headers()
    asyncio.run(
        produce_raw(kafka_bootstrap, stack.topic("leads.received.v1"), b"{this is not json", b"poison", headers)
    )
    with httpx.Client(timeout=10) as client:
        lead_id = post_lead(client, stack["ingest"], sample_lead(1)).json()["lead_id"]
        _wait_all_routed(client, stack, [lead_id])
    dead = asyncio.run(read_topic(kafka_bootstrap, stack.topic("deadletter.scoring.v1")))
    assert [r.value for r in dead] == [b"{this is not json"]
    assert dict(dead[0].headers)["dlq_reason"] == b"invalid_envelope"
    assert dict(dead[0].headers)["ce_id"] == poison_id.encode()


def test_the_same_idempotency_key_gives_one_lead_and_the_same_response(
    make_stack: Callable[..., Stack], kafka_bootstrap: str
) -> None:
    stack = make_stack().start()
    ingest = stack["ingest"]
    lead = sample_lead(7)
    with httpx.Client(timeout=10) as client:
        first = post_lead(client, ingest, lead, **{"Idempotency-Key": "form-42"})
        again = post_lead(client, ingest, lead, **{"Idempotency-Key": "form-42"})
        assert first.status_code == again.status_code == 202
        assert first.json() == again.json()
        assert again.headers.get("idempotent-replayed") == "true"
        conflict = post_lead(client, ingest, {**lead, "company": "Other"}, **{"Idempotency-Key": "form-42"})
        assert conflict.status_code == 409 and conflict.json()["error"] == "idempotency_key_reused"

    async def fifty() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            body = sample_lead(8)
            return await asyncio.gather(
                *[
                    client.post(f"{ingest.url}/v1/leads", json=body, headers={**ADMIN, "Idempotency-Key": "burst-1"})
                    for _ in range(50)
                ]
            )

    responses = asyncio.run(fifty())
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["lead_id"] for r in responses}) == 1
    with httpx.Client(timeout=10) as client:
        _wait_all_routed(client, stack, [first.json()["lead_id"], responses[0].json()["lead_id"]])
    events = asyncio.run(read_topic(kafka_bootstrap, stack.topic("leads.received.v1")))
    subjects = Counter(Event.from_record(r.key, r.value, r.headers).subject for r in events)
    assert subjects[first.json()["lead_id"]] == 1 and subjects[responses[0].json()["lead_id"]] == 1
    assert len(subjects) == 2
