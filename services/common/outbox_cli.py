"""`handoff-outbox`: look at and redrive what a service could not deliver, once the cause is fixed.

    handoff-outbox list --service routing                   # outbox rows the broker refused, with the reason
    handoff-outbox redrive --service routing --id 3 --id 4  # back into the outbox; the running relay publishes them
    handoff-outbox redrive --service routing --all
    handoff-outbox redrive-topic --service scoring          # deadletter.scoring.v1 back to each record's own topic

It reads the same environment as the service (HANDOFF_*, <SERVICE>_DATABASE_URL). A redriven row gets a new place
at the end of the outbox under its own event id, so consumers that saw it before still dedupe it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import UnknownTopicOrPartitionError
from sqlalchemy import Table, delete, insert, select

from common.db import Database, new_metadata
from common.envelope import dumps
from common.kafka import new_producer, security_options
from common.outbox import outbox_dead_table, outbox_table
from common.settings import ServiceSettings
from common.topics import dead_letter_topic

SERVICES = ("ingest", "scoring", "routing")
_METADATA = new_metadata()
OUTBOX = outbox_table(_METADATA)
DEAD = outbox_dead_table(_METADATA)


def _settings(service: str, database_url: str | None) -> ServiceSettings:
    url = database_url or os.environ.get(f"{service.upper()}_DATABASE_URL", "")
    return ServiceSettings(service_name=service, database_url=url)


async def dead_rows(db: Database, dead: Table = DEAD) -> list[dict[str, object]]:
    """The parked rows, oldest first, without their bodies (which hold personal data)."""
    async with db.read() as session:
        rows = await session.execute(
            select(dead.c.id, dead.c.event_id, dead.c.topic, dead.c.reason, dead.c.error, dead.c.dead_at).order_by(
                dead.c.id
            )
        )
        # str(): the column names are SQLAlchemy's quoted_name, which orjson does not take as keys.
        return [{str(k): v for k, v in row._mapping.items()} for row in rows]


async def redrive_dead(db: Database, ids: Sequence[int] | None, *, outbox: Table = OUTBOX, dead: Table = DEAD) -> int:
    """Move parked rows (all when `ids` is None) back into the outbox in one transaction; returns how many."""
    async with db.transaction() as session:
        query = select(dead).order_by(dead.c.id)
        if ids is not None:
            query = query.where(dead.c.id.in_(list(ids)))
        rows = (await session.execute(query)).all()
        if not rows:
            return 0
        columns = ("event_id", "topic", "key", "headers", "value", "created_at")
        await session.execute(insert(outbox), [{c: getattr(row, c) for c in columns} for row in rows])
        await session.execute(delete(dead).where(dead.c.id.in_([row.id for row in rows])))
        return len(rows)


async def redrive_topic(settings: ServiceSettings) -> int:
    """Republish the service's consumer dead letters to the topic each came from (its `dlq_topic` header), with its
    own headers; the redrive group's offsets advance after each send, so a second run resends nothing."""
    source = settings.topic(dead_letter_topic(settings.service_name))
    consumer = AIOKafkaConsumer(
        **security_options(settings),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.consumer_group}-redrive",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = new_producer(settings)
    await consumer.start()
    await producer.start()
    redriven = 0
    try:
        try:
            partitions = [TopicPartition(source, p) for p in sorted(await producer.partitions_for(source))]
        except UnknownTopicOrPartitionError:
            return 0  # no consumer of this service ever dead-lettered anything
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)  # what is there now; letters arriving later wait for a next run
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    headers = list(record.headers or [])
                    target = dict(headers).get("dlq_topic")
                    if target:
                        original = [(k, v) for k, v in headers if not k.startswith("dlq_")]
                        await producer.send_and_wait(target.decode(), record.value, key=record.key, headers=original)
                        redriven += 1
                    await consumer.commit({tp: record.offset + 1})
    finally:
        await producer.stop()
        await consumer.stop()
    return redriven


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handoff-outbox", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--database-url", help="default: <SERVICE>_DATABASE_URL or the data folder's SQLite file")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="outbox rows the broker refused, with the reason")
    redrive = commands.add_parser("redrive", help="move refused rows back into the outbox")
    which = redrive.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, action="append", dest="ids", help="a row id from `list` (repeatable)")
    which.add_argument("--all", action="store_true", help="every refused row")
    topic = commands.add_parser("redrive-topic", help="republish consumer dead letters to their original topics")
    for command in (listing, redrive, topic):
        command.add_argument("--service", required=True, choices=SERVICES)
    return parser


async def _run(args: argparse.Namespace) -> int:
    settings = _settings(args.service, args.database_url)
    if args.command == "redrive-topic":
        print(f"redriven {await redrive_topic(settings)} dead letter(s) of {args.service}")
        return 0
    db = Database(settings.resolved_database_url(), sqlite_busy_timeout_s=settings.sqlite_busy_timeout_s)
    try:
        if args.command == "list":
            for row in await dead_rows(db):
                print(dumps(row).decode())
            return 0
        moved = await redrive_dead(db, None if args.all else args.ids)
        print(f"moved {moved} row(s) back into the {args.service} outbox")
        return 0
    finally:
        await db.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
