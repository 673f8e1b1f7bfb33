"""Ids of the rows and events Handoff creates: time-ordered UUIDs (version 7, RFC 9562) in the usual text form.

Why not version 4: an id is the key of indexes (a lead's primary key, an event's processed_events mark in the next
consumer, a webhook delivery's primary key and its (endpoint, message) key). A random key lands on a random page of
each such index, so every commit dirtied, and wrote to SQLite's WAL, a page per row per index; ids that grow with
time land on the indexes' last pages (ingest measured SQLite's CPU per stored lead 45 -> 28-31 us). The first 48
bits are the Unix time in milliseconds, which the row or event carries anyway; the other 74 are random (after the
version nibble 7 and the variant bits 10), so ids stay unguessable and distinct within a millisecond.

Lease tokens and secrets are not made here: they key no index and carry no time.
"""

from __future__ import annotations

import os
import time

# The version nibble (7) and the variant's two high bits (10) over the 80 bits after the time: 74 stay random.
_RANDOM = ~((0xF << 76) | (0x3 << 62)) & ((1 << 80) - 1)
_MARKS = (0x7 << 76) | (0x2 << 62)

# A hex digit of the variant's nibble from any random one: its two high bits become 10, the two low stay random.
_VARIANT = {f"{digit:x}": f"{digit & 3 | 8:x}" for digit in range(16)}


def new_id() -> str:
    """One id, from one read of the system's randomness and no UUID object (str(uuid.uuid4()) costs twice this)."""
    h = "%032x" % (
        (time.time_ns() // 1_000_000 & 0xFFFFFFFFFFFF) << 80 | int.from_bytes(os.urandom(10)) & _RANDOM | _MARKS
    )
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_ids(count: int) -> list[str]:
    """`count` ids of the same millisecond, from one read of the system's randomness for them all (a batch's leads,
    events or deliveries): the random hex is cut into place instead of each id being formatted from an integer."""
    stamp = f"{time.time_ns() // 1_000_000 & 0xFFFFFFFFFFFF:012x}"
    head = f"{stamp[:8]}-{stamp[8:]}-7"
    digits = os.urandom(10 * count).hex()
    return [
        f"{head}{digits[at : at + 3]}-{_VARIANT[digits[at + 3]]}{digits[at + 4 : at + 7]}-{digits[at + 7 : at + 19]}"
        for at in range(0, 20 * count, 20)
    ]
