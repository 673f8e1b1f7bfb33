"""The order a poll's events are applied in: grouped by type for the batch handlers, never reordered per subject."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka.structs import ConsumerRecord

from common.envelope import Event

Item = tuple[ConsumerRecord, Event]


def subject_ordered_groups(items: Sequence[Item]) -> list[dict[str, list[Item]]]:
    """Consecutive segments of `items`, each grouped by type (types in order of first appearance, events in order).

    Applying the groups of a segment one after another never reorders the events of one subject: a new segment
    starts where an event's type group would run before a group already holding an earlier event of its subject.
    """
    segments: list[dict[str, list[Item]]] = []
    groups: dict[str, list[Item]] = {}
    rank: dict[str, int] = {}  # a type's place among the segment's groups
    latest: dict[str, int] = {}  # per subject, the highest group rank its events reached so far
    for item in items:
        event = item[1]
        place = rank.get(event.type, len(rank))
        if latest.get(event.subject, -1) > place:
            segments.append(groups)
            groups, rank, latest = {}, {}, {}
            place = 0
        rank.setdefault(event.type, place)
        groups.setdefault(event.type, []).append(item)
        latest[event.subject] = max(latest.get(event.subject, -1), place)
    if groups:
        segments.append(groups)
    return segments
