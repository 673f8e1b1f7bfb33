"""The relay's cheaper pieces give what the ones they replace give: Kafka's murmur2 partition for a key, and the
publish-delay histogram's buckets and sum; and the relay learns when the producer's sender took a round's batches."""

from __future__ import annotations

import asyncio
import random

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from prometheus_client import CollectorRegistry, Histogram

from common.kafka import Murmur2Partitioner, RequestsTaken, murmur2
from common.outbox import observe_all


def test_murmur2_is_aiokafkas_for_every_length_and_byte() -> None:
    rng = random.Random(7)
    keys = [rng.randbytes(n) for n in range(0, 80) for _ in range(25)]
    keys += [b"\xff" * n for n in range(12)] + [b"lead-1", "Zoë-✓".encode()]
    assert [murmur2(key) for key in keys] == [aiokafka_murmur2(key) for key in keys]


def test_the_partition_of_a_key_is_the_default_partitioners() -> None:
    ours, theirs = Murmur2Partitioner(), DefaultPartitioner()
    rng = random.Random(11)
    for partitions in (1, 2, 3, 6, 7, 12, 100):
        all_partitions = list(range(partitions))
        for _ in range(200):
            key = str(rng.getrandbits(128)).encode()
            assert ours(key, all_partitions, all_partitions) == theirs(key, all_partitions, all_partitions)


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    assert {Murmur2Partitioner()(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}


def _samples(histogram: Histogram) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in histogram.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def test_observe_all_counts_what_observe_counts() -> None:
    buckets = (0.001, 0.01, 0.1, 1, 10)
    one_by_one = Histogram("one_by_one_seconds", "-", buckets=buckets, registry=CollectorRegistry())
    at_once = Histogram("one_by_one_seconds", "-", buckets=buckets, registry=CollectorRegistry())
    amounts = [0.0, 0.001, 0.0011, 0.01, 0.5, 1.0, 9.99, 10.0, 10.5, 1e6, 0.002, 0.002]
    for amount in amounts:
        one_by_one.observe(amount)
    observe_all(at_once, amounts)
    observe_all(at_once, [])
    assert _samples(at_once) == _samples(one_by_one)


async def test_requests_taken_calls_back_once_the_sender_has_taken_every_batch_noted() -> None:
    # aiokafka's accumulator as the relay's round leaves it: one queued batch per partition. The sender takes a batch
    # (MessageBatch.drain_ready) when it builds the produce request; nothing may call back before the last is taken.
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")  # never started: no broker needed
    accumulator = producer._message_accumulator
    calls: list[str] = []
    taken = RequestsTaken(lambda: calls.append("taken"))
    for partition in (0, 1):
        accumulator._append_batch(producer.create_batch(), TopicPartition("t", partition))
        taken.note(producer, "t", partition)
    taken.noted_all()
    queued = [accumulator._batches[TopicPartition("t", p)][-1] for p in (0, 1)]
    queued[0].drain_ready()
    await asyncio.sleep(0)
    assert calls == []
    queued[1].drain_ready()
    await asyncio.sleep(0)
    assert calls == ["taken"]


async def test_requests_taken_never_calls_back_for_a_batch_it_cannot_watch() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    calls: list[str] = []
    taken = RequestsTaken(lambda: calls.append("taken"))
    taken.note(producer, "t", 0)  # nothing queued for it: the relay then waits for the acknowledgements
    taken.noted_all()
    await asyncio.sleep(0)
    assert calls == []
