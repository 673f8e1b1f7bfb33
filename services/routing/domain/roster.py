"""The roster seed parser: teams and reps from YAML/JSON, every problem named by its field.

Seed shape (YAML or JSON, already parsed into a mapping)::

    teams:
      - id: sales                 # required, unique
        name: Sales               # default: the id
        method: weighted          # default rotation for the team: weighted | round_robin | least_loaded
        queue_sla_minutes: 60     # SLA of the team queue when no rep can take a lead
        queue_business_hours: true
        timezone: Europe/London   # the queue's clock (default UTC)
        hours: {mon-fri: "09:00-17:00"}
        manager_id: m-1           # a rep id; escalation target
        sla: {minutes: {A: 5, B: 60}, escalation: [reassign, notify_manager, manager]}
                                  # the team's SLA policy (grammar in routing.domain.sla_grammar); a rule's wins
    reps:
      - id: r-1                   # required, unique
        name: Dana Lee            # required
        email: dana@example.com   # required
        team: sales               # a team id, or null
        timezone: America/Los_Angeles      # IANA name, default UTC
        hours: {mon-thu: "08:00-12:00, 13:00-17:00", fri: "08:00-12:00"}
        closed_on: [2025-12-25]   # local dates off (holidays)
        languages: [en, es]       # primary subtags; empty = no language restriction
        territories: [US-CA, NORAM, DE, EMEA]  # ISO countries, CC-SS subdivisions, regions; empty = anywhere
        segments: [enterprise]    # empty = every segment
        weight: 3                 # share in weighted rotation, >= 1
        max_open: 40              # null = unlimited
        max_per_day: 15
        status: active            # active | away | ooo | left
        ooo_from: 2025-08-01T00:00:00Z     # aware ISO datetimes
        ooo_until: 2025-08-15T00:00:00Z
        manager_id: m-1

Other top-level keys (such as `accounts`, read by the caller) are ignored; unknown keys inside a
team or rep are errors, so a typo like `wieght` is caught.

Hours: keys are days (mon..sun), ranges (mon-fri) or lists (sat,sun); values are "HH:MM-HH:MM"
spans separated by commas, a list of such strings, or null/[] for closed. "24:00" ends at midnight.
`hours: always` means around the clock. No `hours` key means Monday-Friday 09:00-17:00.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from typing import Any

from routing.domain.geo import territory_problem
from routing.domain.hours import END_OF_DAY, WorkingHours, zone
from routing.domain.reps import CAPACITY_COUNTS, METHODS, REP_STATUSES, Rep, Team
from routing.domain.sla_grammar import parse_sla_block

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class RosterError(ValueError):
    """The reps/teams seed is invalid; `errors` lists every problem, each naming its field."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class _Errors:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")


def _text(value: Any, where: str, errors: _Errors, *, required: bool = True) -> str | None:
    if value is None or value == "":
        if required:
            errors.add(where, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        # YAML 1.1 reads NO/yes/off as booleans; that bites country codes first.
        errors.add(where, f"expected a string, got {value!r} (quote it in YAML)")
        return None
    return str(value).strip()


def _count(value: Any, where: str, errors: _Errors, *, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        errors.add(where, f"expected an integer >= {minimum}, got {value!r}")
        return None
    return value


def _string_set(value: Any, where: str, errors: _Errors) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [part for part in value.replace(",", " ").split() if part]
    if not isinstance(value, Sequence):
        errors.add(where, f"expected a list of strings, got {value!r}")
        return []
    out: list[str] = []
    for index, item in enumerate(value):
        text = _text(item, f"{where}[{index}]", errors)
        if text:
            out.append(text)
    return out


def _clock(text: str, where: str, errors: _Errors) -> time | None:
    text = text.strip()
    if text in ("24:00", "24:00:00"):
        return END_OF_DAY
    try:
        return time.fromisoformat(text)
    except ValueError:
        errors.add(where, f"bad time {text!r}, expected HH:MM")
        return None


def _spans(value: Any, where: str, errors: _Errors) -> list[tuple[time, time]]:
    if value is None or value == [] or value == "" or value == "closed":
        return []
    pieces: list[Any]
    if isinstance(value, str):
        pieces = [piece for piece in value.split(",") if piece.strip()]
    elif isinstance(value, Sequence):
        pieces = list(value)
    else:
        errors.add(where, f"expected 'HH:MM-HH:MM' spans, got {value!r}")
        return []
    spans: list[tuple[time, time]] = []
    for piece in pieces:
        if isinstance(piece, Sequence) and not isinstance(piece, str) and len(piece) == 2:
            raw_start, raw_end = str(piece[0]), str(piece[1])
        elif isinstance(piece, str) and piece.count("-") == 1:
            raw_start, raw_end = piece.split("-")
        else:
            errors.add(where, f"bad span {piece!r}, expected 'HH:MM-HH:MM'")
            continue
        start, end = _clock(raw_start, where, errors), _clock(raw_end, where, errors)
        if start is None or end is None:
            continue
        if end != END_OF_DAY and end <= start:
            errors.add(where, f"span {piece!r} ends before it starts (overnight shifts: split at 24:00)")
            continue
        spans.append((start, end))
    return spans


def _days(key: str, where: str, errors: _Errors) -> list[int]:
    days: list[int] = []
    for part in str(key).lower().replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if first not in _DAYS or (dash and last not in _DAYS):
            errors.add(where, f"unknown day {part!r}, expected mon..sun, a range like mon-fri or a list")
            continue
        lo, hi = _DAYS.index(first), _DAYS.index(last) if dash else _DAYS.index(first)
        if hi < lo:
            errors.add(where, f"day range {part!r} runs backwards")
            continue
        days.extend(range(lo, hi + 1))
    return days


def parse_hours(value: Any, closed_on: Any, where: str, errors: _Errors) -> WorkingHours:
    """A WorkingHours from the seed's `hours` (+ `closed_on`) values; problems go to `errors`."""
    closed: set[date] = set()
    for index, item in enumerate(closed_on or []):
        if isinstance(item, datetime):
            item = item.date()
        if isinstance(item, str):
            try:
                item = date.fromisoformat(item)
            except ValueError:
                errors.add(f"{where}.closed_on[{index}]", f"bad date {item!r}")
                continue
        if isinstance(item, date):
            closed.add(item)
        else:
            errors.add(f"{where}.closed_on[{index}]", f"bad date {item!r}")
    if value is None:
        return WorkingHours(closed_dates=frozenset(closed))
    if value in ("always", "24/7"):
        return WorkingHours(by_weekday=WorkingHours.always().by_weekday, closed_dates=frozenset(closed))
    if not isinstance(value, Mapping):
        errors.add(f"{where}.hours", f"expected a mapping of days to spans or 'always', got {value!r}")
        return WorkingHours()
    week: dict[int, list[tuple[time, time]]] = {}
    for key, spans in value.items():
        day_where = f"{where}.hours.{key}"
        parsed = _spans(spans, day_where, errors)
        for day in _days(str(key), day_where, errors):
            week.setdefault(day, []).extend(parsed)
    hours = WorkingHours(by_weekday={d: sorted(s) for d, s in week.items() if s}, closed_dates=frozenset(closed))
    if not hours.has_working_time():
        errors.add(f"{where}.hours", "no working time in the week (use status: away to pause a rep)")
    return hours


def _moment(value: Any, where: str, errors: _Errors) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            errors.add(where, f"bad datetime {value!r}, expected ISO 8601 with an offset")
            return None
    if not isinstance(value, datetime):
        errors.add(where, f"bad datetime {value!r}")
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        errors.add(where, "datetime needs a UTC offset (e.g. 2025-08-01T00:00:00Z)")
        return None
    return value


def _timezone(value: Any, where: str, errors: _Errors) -> str:
    name = _text(value, where, errors, required=False) or "UTC"
    try:
        zone(name)
    except ValueError as exc:
        errors.add(where, str(exc))
        return "UTC"
    return name


def _known_keys(item: Mapping[str, Any], allowed: set[str], where: str, errors: _Errors) -> None:
    for key in item:
        if key not in allowed:
            errors.add(f"{where}.{key}", "unknown field")


_TEAM_KEYS = {
    "id",
    "name",
    "method",
    "queue_sla_minutes",
    "queue_business_hours",
    "timezone",
    "hours",
    "closed_on",
    "manager_id",
    "sla",
    "capacity_counts",
}
_REP_KEYS = {
    "id",
    "name",
    "email",
    "team",
    "timezone",
    "hours",
    "closed_on",
    "languages",
    "territories",
    "segments",
    "weight",
    "max_open",
    "max_per_day",
    "status",
    "ooo_from",
    "ooo_until",
    "manager_id",
    "calendar_url",
}


def _parse_team(item: Any, where: str, errors: _Errors) -> Team | None:
    if not isinstance(item, Mapping):
        errors.add(where, "expected a mapping")
        return None
    _known_keys(item, _TEAM_KEYS, where, errors)
    team_id = _text(item.get("id"), f"{where}.id", errors)
    method = item.get("method", "weighted")
    if method not in METHODS:
        errors.add(f"{where}.method", f"unknown method {method!r}, expected one of {', '.join(METHODS)}")
        method = "weighted"
    sla = _count(item.get("queue_sla_minutes", 60), f"{where}.queue_sla_minutes", errors, minimum=1)
    business = item.get("queue_business_hours", True)
    if not isinstance(business, bool):
        errors.add(f"{where}.queue_business_hours", f"expected true or false, got {business!r}")
        business = True
    sla_block, sla_errors = parse_sla_block(item.get("sla"), f"{where}.sla")
    counts = item.get("capacity_counts")
    if counts not in (None, *CAPACITY_COUNTS):
        errors.add(f"{where}.capacity_counts", f"expected one of {', '.join(CAPACITY_COUNTS)}, got {counts!r}")
    errors.items.extend(sla_errors)
    if team_id is None:
        return None
    return Team(
        id=team_id,
        name=_text(item.get("name"), f"{where}.name", errors, required=False) or team_id,
        queue_sla_minutes=sla or 60,
        method=method,
        queue_business_hours=business,
        timezone=_timezone(item.get("timezone"), f"{where}.timezone", errors),
        hours=parse_hours(item.get("hours"), item.get("closed_on"), where, errors),
        manager_id=_text(item.get("manager_id"), f"{where}.manager_id", errors, required=False),
        sla=sla_block,
        capacity_counts=counts if counts in CAPACITY_COUNTS else None,
    )


def _parse_rep(item: Any, where: str, errors: _Errors) -> Rep | None:
    if not isinstance(item, Mapping):
        errors.add(where, "expected a mapping")
        return None
    _known_keys(item, _REP_KEYS, where, errors)
    rep_id = _text(item.get("id"), f"{where}.id", errors)
    name = _text(item.get("name"), f"{where}.name", errors)
    email = _text(item.get("email"), f"{where}.email", errors)
    if email is not None and "@" not in email:
        errors.add(f"{where}.email", "is not an email address")
    status = item.get("status", "active")
    if status not in REP_STATUSES:
        errors.add(f"{where}.status", f"unknown status {status!r}, expected one of {', '.join(REP_STATUSES)}")
        status = "active"
    territories = []
    for index, code in enumerate(_string_set(item.get("territories"), f"{where}.territories", errors)):
        problem = territory_problem(code)
        if problem:
            errors.add(f"{where}.territories[{index}]", problem)
        territories.append(code.upper())
    weight = _count(item.get("weight", 1), f"{where}.weight", errors, minimum=1)
    ooo_from = _moment(item.get("ooo_from"), f"{where}.ooo_from", errors)
    ooo_until = _moment(item.get("ooo_until"), f"{where}.ooo_until", errors)
    if ooo_from and ooo_until and ooo_until <= ooo_from:
        errors.add(f"{where}.ooo_until", "must be after ooo_from")
    calendar_url = _text(item.get("calendar_url"), f"{where}.calendar_url", errors, required=False)
    if calendar_url is not None and (not calendar_url.startswith(("https://", "http://")) or len(calendar_url) > 2048):
        errors.add(f"{where}.calendar_url", "expected an http(s) URL of an iCalendar feed")
    if rep_id is None or name is None or email is None:
        return None
    return Rep(
        id=rep_id,
        name=name,
        email=email,
        team=_text(item.get("team"), f"{where}.team", errors, required=False),
        timezone=_timezone(item.get("timezone"), f"{where}.timezone", errors),
        hours=parse_hours(item.get("hours"), item.get("closed_on"), where, errors),
        languages=frozenset(
            lang.lower().split("-")[0] for lang in _string_set(item.get("languages"), f"{where}.languages", errors)
        ),
        territories=frozenset(territories),
        segments=frozenset(s.lower() for s in _string_set(item.get("segments"), f"{where}.segments", errors)),
        weight=weight or 1,
        max_open=_count(item.get("max_open"), f"{where}.max_open", errors, minimum=0),
        max_per_day=_count(item.get("max_per_day"), f"{where}.max_per_day", errors, minimum=0),
        status=status,
        ooo_from=ooo_from,
        ooo_until=ooo_until,
        manager_id=_text(item.get("manager_id"), f"{where}.manager_id", errors, required=False),
        calendar_url=calendar_url,
    )


def parse_reps(data: Mapping[str, Any]) -> tuple[list[Team], list[Rep]]:
    """Teams and reps from the seed mapping (shape in the module docstring); RosterError lists all."""
    errors = _Errors()
    if not isinstance(data, Mapping):
        raise RosterError(["<root>: expected a mapping with 'teams' and 'reps'"])
    # `accounts` may sit in the same seed file; the caller reads it, so it is allowed and ignored here.
    _known_keys(data, {"teams", "reps", "accounts"}, "<root>", errors)
    raw_teams, raw_reps = data.get("teams") or [], data.get("reps") or []
    if not isinstance(raw_teams, Sequence) or isinstance(raw_teams, str):
        errors.add("teams", "expected a list")
        raw_teams = []
    if not isinstance(raw_reps, Sequence) or isinstance(raw_reps, str):
        errors.add("reps", "expected a list")
        raw_reps = []
    teams = [t for i, raw in enumerate(raw_teams) if (t := _parse_team(raw, f"teams[{i}]", errors))]
    reps = [r for i, raw in enumerate(raw_reps) if (r := _parse_rep(raw, f"reps[{i}]", errors))]

    team_ids = _unique([t.id for t in teams], "teams", errors)
    rep_ids = _unique([r.id for r in reps], "reps", errors)
    for index, rep in enumerate(reps):
        if rep.team is not None and rep.team not in team_ids:
            errors.add(f"reps[{index}].team", f"unknown team {rep.team!r}")
        if rep.manager_id is not None and rep.manager_id not in rep_ids:
            errors.add(f"reps[{index}].manager_id", f"unknown rep {rep.manager_id!r}")
    for index, team in enumerate(teams):
        if team.manager_id is not None and team.manager_id not in rep_ids:
            errors.add(f"teams[{index}].manager_id", f"unknown rep {team.manager_id!r}")
    if errors.items:
        raise RosterError(errors.items)
    return teams, reps


def _unique(ids: list[str], where: str, errors: _Errors) -> set[str]:
    seen: set[str] = set()
    for index, item in enumerate(ids):
        if item in seen:
            errors.add(f"{where}[{index}].id", f"duplicate id {item!r}")
        seen.add(item)
    return seen
