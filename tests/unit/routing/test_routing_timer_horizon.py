"""The timer engine's near horizon: a lead's timers belong to the partition Kafka gives its lead.scored record,
and due timers come out earliest first across partitions, each once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from aiokafka.partitioner import DefaultPartitioner

from routing.timers import Horizon, Ownership, partition_of

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


def test_a_lead_belongs_to_the_partition_its_record_is_produced_to() -> None:
    partitioner = DefaultPartitioner()
    partitions = list(range(6))
    for _ in range(200):
        lead_id = str(uuid.uuid4())
        assert partition_of(lead_id, 6) == partitioner(lead_id.encode(), partitions, partitions)


def test_only_the_owned_partitions_are_held_and_due_timers_come_out_in_due_order_once() -> None:
    leads = [str(uuid.uuid4()) for _ in range(60)]
    horizon = Horizon(Ownership(3, frozenset({0, 2})))
    rows = [(k + 1, lead, T0 + timedelta(seconds=60 - k)) for k, lead in enumerate(leads)]
    horizon.add(rows)
    horizon.add(rows)  # a refill that reads them again changes nothing
    mine = [row for row in rows if partition_of(row[1], 3) in {0, 2}]
    assert len(horizon) == len(mine)

    due_by = (T0 + timedelta(seconds=30)).timestamp()
    first = horizon.pop_due(due_by, limit=5)
    rest = horizon.pop_due(due_by, limit=1000)
    expected = [timer_id for timer_id, _lead, due in sorted(mine, key=lambda r: r[2]) if due.timestamp() <= due_by]
    assert first + rest == expected
    assert horizon.pop_due(due_by, limit=1000) == []
    assert horizon.next_due() == min(due.timestamp() for _id, _lead, due in mine if due.timestamp() > due_by)


def test_a_process_that_owns_every_timer_holds_them_all() -> None:
    horizon = Horizon(None)
    horizon.add([(1, str(uuid.uuid4()), T0), (2, str(uuid.uuid4()), T0 - timedelta(seconds=1))])
    assert horizon.pop_due(T0.timestamp(), limit=10) == [2, 1]
