"""The `sla:` block grammar: parses a rule's or a team's block into an SlaBlock, naming every problem by path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from routing.domain.sla import LADDER_STEPS, FollowUp, LadderStep, SlaBlock, WarnPoint

# Grammar (the same block on a rule and on a team; every field is optional)::
#
#     sla:
#       minutes: 5                  # or per grade: {A: 5, B: 30}; a grade left out falls through
#       business_hours: true        # false: around the clock
#       warn_at: [0.5, {minutes_before: 2}]   # fractions of the SLA, or minutes before it is due
#       escalation:                 # the ladder, one step per missed clock; the last step repeats
#         - reassign                # next eligible rep, fresh clock
#         - {step: notify_manager, minutes: 10}   # tell the manager, keep the rep, run a 10-minute clock
#         - {step: manager, minutes: 30}          # hand the lead to the manager
#         - queue                   # send it to the team queue
#       follow_up: {touches: 3, within_hours: 48}   # after the first touch: 3 touches (the first counts)
#
# Each field comes from the most specific block that sets it: the matched rule's, else the team's, else the
# environment defaults (HANDOFF_SLA_*, HANDOFF_ESCALATION_*). A step's `minutes` is the clock that runs after it
# (default: the policy's minutes). `escalation: []` escalates nothing: a breach is reported and the rep keeps the
# lead. A queued lead runs on its team's queue clock (queue_sla_minutes); warnings, ladder and follow-up still
# come from the blocks.

_GRADES = ("A", "B", "C", "D")
_SLA_KEYS = ("minutes", "business_hours", "warn_at", "escalation", "follow_up")


def _positive(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def parse_sla_block(raw: Any, where: str) -> tuple[SlaBlock | None, list[str]]:
    """An `sla:` block (grammar above) and every problem in it as 'path: message'."""
    errors: list[str] = []
    if raw is None:
        return None, errors
    if not isinstance(raw, Mapping):
        return None, [f"{where}: expected a mapping like {{minutes: 5, business_hours: false}}"]
    expected = ", ".join(_SLA_KEYS)
    errors.extend(f"{where}.{key}: unknown field (expected {expected})" for key in raw if key not in _SLA_KEYS)
    minutes: float | None = None
    by_grade: list[tuple[str, float]] = []
    raw_minutes = raw.get("minutes")
    if isinstance(raw_minutes, Mapping):
        for grade, value in raw_minutes.items():
            at = f"{where}.minutes.{grade}"
            if str(grade).upper() not in _GRADES:
                errors.append(f"{at}: unknown grade (expected one of {', '.join(_GRADES)})")
            elif (number := _positive(value)) is None:
                errors.append(f"{at}: must be > 0")
            else:
                by_grade.append((str(grade).upper(), number))
    elif raw_minutes is not None:
        minutes = _positive(raw_minutes)
        if minutes is None:
            errors.append(f"{where}.minutes: must be > 0")
    business = raw.get("business_hours")
    if business is not None and not isinstance(business, bool):
        errors.append(f"{where}.business_hours: expected true or false (false: around the clock), got {business!r}")
        business = None
    return (
        SlaBlock(
            minutes=minutes,
            minutes_by_grade=tuple(by_grade),
            business_hours=business,
            warn_at=_warn_points(raw["warn_at"], f"{where}.warn_at", errors) if "warn_at" in raw else None,
            escalation=_ladder(raw["escalation"], f"{where}.escalation", errors) if "escalation" in raw else None,
            follow_up=_follow_up(raw.get("follow_up"), f"{where}.follow_up", errors),
        ),
        errors,
    )


def _warn_points(raw: Any, where: str, errors: list[str]) -> tuple[WarnPoint, ...]:
    items = raw if isinstance(raw, list) else [raw]
    points: list[WarnPoint] = []
    for index, item in enumerate(items):
        at = f"{where}[{index}]"
        if isinstance(item, Mapping):
            before = _positive(item.get("minutes_before"))
            if set(item) != {"minutes_before"} or before is None:
                errors.append(f"{at}: expected {{minutes_before: N}} with N > 0")
                continue
            points.append(WarnPoint(minutes_before=before))
        elif (fraction := _positive(item)) is not None and fraction < 1:
            points.append(WarnPoint(fraction=fraction))
        else:
            errors.append(f"{at}: expected a fraction between 0 and 1, or {{minutes_before: N}}")
    return tuple(points)


def _ladder(raw: Any, where: str, errors: list[str]) -> tuple[LadderStep, ...]:
    if not isinstance(raw, list):
        errors.append(f"{where}: expected a list of steps ({', '.join(LADDER_STEPS)})")
        return ()
    steps: list[LadderStep] = []
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        step: Any = item if isinstance(item, str) else None
        minutes: float | None = None
        if isinstance(item, Mapping):
            step = item.get("step")
            for key in item:
                if key not in ("step", "minutes"):
                    errors.append(f"{at}.{key}: unknown field (expected step, minutes)")
            if item.get("minutes") is not None:
                minutes = _positive(item["minutes"])
                if minutes is None:
                    errors.append(f"{at}.minutes: must be > 0")
        if step not in LADDER_STEPS:
            errors.append(f"{at}: unknown step {step!r} (expected one of {', '.join(LADDER_STEPS)})")
            continue
        steps.append(LadderStep(str(step), minutes))
    return tuple(steps)


def _follow_up(raw: Any, where: str, errors: list[str]) -> FollowUp | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        errors.append(f"{where}: expected {{touches: N, within_hours: H}}")
        return None
    for key in raw:
        if key not in ("touches", "within_hours"):
            errors.append(f"{where}.{key}: unknown field (expected touches, within_hours)")
    touches = raw.get("touches")
    if isinstance(touches, bool) or not isinstance(touches, int) or touches < 2:
        errors.append(f"{where}.touches: must be an integer >= 2 (the first touch counts)")
        touches = None
    hours = _positive(raw.get("within_hours"))
    if hours is None:
        errors.append(f"{where}.within_hours: must be > 0")
    if touches is None or hours is None:
        return None
    return FollowUp(touches, hours)
