"""Event contracts (schemas/): valid schemas, a complete AsyncAPI, and real events that fit them."""

from __future__ import annotations

import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from cloudevents.core.bindings import kafka as ce_kafka
from jsonschema import Draft202012Validator
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert

from common.envelope import Event, loads
from common.topics import EVENT_TOPICS, dead_letter_topic
from ingest import handlers as ingest_handlers
from ingest.api import SourceIn
from ingest.domain import normalize_lead
from ingest.settings import IngestSettings
from ingest.store import Lead, Source
from routing import consumer as routing_consumer
from routing import handlers as routing_handlers
from routing.domain import (
    EXCLUSION_REASONS,
    OUTCOMES,
    Decision,
    Rep,
    Team,
    WorkingHours,
    default_sla_policies,
    load_rules,
    route,
    sla_deadline,
)
from routing.domain.lifecycle import touch_facts
from routing.domain.reps import METHODS
from routing.settings import RoutingSettings
from routing.store import AssignmentRow, LeadRow, SlaTimer
from routing.usecases import assign as routing_assign
from routing.usecases import decide as routing_decide
from routing.usecases import notices as routing_notices
from routing.usecases.context import Roster as RoutingRoster
from routing.usecases.shared import clock_of as routing_clock_of
from routing.usecases.shared import event as routing_event
from routing.usecases.shared import publish as routing_publish
from scoring import consumer as scoring_consumer
from scoring import handlers as scoring_handlers
from scoring.domain import (
    DEFAULT_RULESET_YAML,
    EMAIL_TYPES,
    EMPLOYEE_BANDS,
    FUNCTIONS,
    GRADES,
    OUTCOME_FEATURES,
    SENIORITIES,
    Firmographic,
    OutcomeCounts,
    conversion_probability,
    enrich,
    load_ruleset,
    outcome_features,
    score_lead,
)
from scoring.domain.phones import LINE_TYPES
from scoring.settings import ScoringSettings
from tests.support.contracts import (
    ASYNCAPI,
    EVENTS_DIR,
    HEADERS_SCHEMA,
    SCHEMAS_DIR,
    event_schema_path,
    load_json,
    registry,
    schema_files,
    validate_event,
    validate_headers,
    validate_record,
)

pytestmark = pytest.mark.unit

# Wednesday 15:00 UTC: working time in London, 07:00 in Los Angeles.
NOW = datetime(2025, 3, 5, 15, 0, tzinfo=UTC)
LEAD_ID = "7d1f3c2a-9b8e-4f6d-a5c4-3b2a1f0e9d8c"
EARLIER_LEAD_ID = "0b6c7a8d-1e2f-4a3b-9c8d-7e6f5a4b3c2d"
REPEAT_ID = "5e4d3c2b-1a09-4f8e-8d7c-6b5a49382716"
CORRELATION_ID = "req-4f2a9c"
SHARED_DEFS = {"common", "lead"}

RAW_LEAD: dict[str, Any] = {
    "First Name": "Zoë",
    "last_name": "Dupont",
    "email": "Zoe.Dupont@Acme.io",
    "phone": "+44 20 7946 0958",
    "company": "Acme",
    "job_title": "VP of Sales",
    "website": "acme.io/about",
    "country": "United Kingdom",
    "city": "London",
    "postal_code": "EC1A 1BB",
    "language": "en-gb",
    "comments": "Call me after 3pm,\nnot before.",
    "page_url": "https://acme.io/demo?utm_source=google&utm_campaign=spring&gclid=abc123",
    "utm_medium": "cpc",
    "gdpr": "yes",
    "newsletter": "no",
    "submitted_at": "2025-03-05T14:59:30Z",
    "budget": 5000,
    "seats": {"min": 10, "max": 50},
}


# -- the schemas themselves ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", schema_files(), ids=lambda p: str(p.relative_to(SCHEMAS_DIR)))
def test_every_schema_is_a_valid_2020_12_schema_with_id_title_and_description(path: Any) -> None:
    schema = load_json(path)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("/schemas/" + str(path.relative_to(SCHEMAS_DIR)))
    assert schema["title"] and schema["description"]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


@pytest.mark.parametrize("path", schema_files(), ids=lambda p: str(p.relative_to(SCHEMAS_DIR)))
def test_every_ref_resolves_locally(path: Any) -> None:
    schema = load_json(path)
    resolver = registry().resolver(base_uri=schema["$id"])
    for ref in _refs(schema):
        assert resolver.lookup(ref).contents is not None, ref


def test_every_event_type_has_a_schema_and_there_are_no_others() -> None:
    event_schemas = {p.name.removesuffix(".schema.json") for p in EVENTS_DIR.glob("*.schema.json")}
    assert event_schemas - SHARED_DEFS == set(EVENT_TOPICS)
    for event_type in EVENT_TOPICS:
        schema = load_json(event_schema_path(event_type))
        assert schema["title"] == event_type
        # Top level open, so adding a field is never a breaking change for consumers that validate.
        assert schema["additionalProperties"] is True


def test_header_schema_knows_every_event_type_and_every_producer() -> None:
    headers = load_json(HEADERS_SCHEMA)["properties"]
    assert set(headers["ce_type"]["enum"]) == set(EVENT_TOPICS)
    sources = {ingest_handlers.EVENT_SOURCE, scoring_handlers.EVENT_SOURCE, routing_handlers.EVENT_SOURCE}
    assert set(headers["ce_source"]["enum"]) == sources


def _at(schema_file: str, pointer: str) -> Any:
    node: Any = load_json(EVENTS_DIR / schema_file)
    for part in pointer.strip("/").split("/"):
        node = node[part]
    return node


def _source_kinds() -> set[str]:
    kind = typing.get_type_hints(SourceIn)["kind"]
    return {"api", *typing.get_args(kind)}  # "api": leads posted through the admin API have no source


@pytest.mark.parametrize(
    ("schema_file", "pointer", "vocabulary"),
    [
        ("common.schema.json", "$defs/grade/enum", lambda: set(GRADES)),
        ("common.schema.json", "$defs/sourceKind/enum", _source_kinds),
        (
            "lead.schema.json",
            "properties/utm/propertyNames/enum",
            lambda: {"source", "medium", "campaign", "term", "content"},
        ),
        ("lead.scored.schema.json", "$defs/enrichment/properties/email_type/enum", lambda: set(EMAIL_TYPES)),
        (
            "lead.scored.schema.json",
            "$defs/enrichment/properties/seniority/enum",
            lambda: {*SENIORITIES, None},
        ),
        ("lead.scored.schema.json", "$defs/enrichment/properties/function/enum", lambda: {*FUNCTIONS, None}),
        (
            "lead.scored.schema.json",
            "$defs/enrichment/properties/phone_line_type/enum",
            lambda: {*LINE_TYPES, None},
        ),
        (
            "lead.scored.schema.json",
            "$defs/company/properties/employee_band/enum",
            lambda: {*EMPLOYEE_BANDS, None},
        ),
        ("lead.scored.schema.json", "$defs/factor/properties/field/enum", lambda: set(OUTCOME_FEATURES)),
        ("lead.assigned.schema.json", "$defs/assignment/properties/outcome/enum", lambda: set(OUTCOMES)),
        (
            "lead.assigned.schema.json",
            "$defs/candidate/properties/excluded_because/items/enum",
            lambda: set(EXCLUSION_REASONS),
        ),
        (
            "lead.assigned.schema.json",
            "$defs/sla/properties/policy/enum",
            lambda: set(default_sla_policies()),
        ),
    ],
)
def test_schema_vocabularies_match_the_code(schema_file: str, pointer: str, vocabulary: Any) -> None:
    assert set(_at(schema_file, pointer)) == vocabulary()


def test_utm_keys_match_ingest() -> None:
    from ingest.domain.lead import UTM_KEYS

    assert set(_at("lead.schema.json", "properties/utm/propertyNames/enum")) == set(UTM_KEYS)


def test_every_rotation_method_is_allowed() -> None:
    assert set(METHODS) <= set(_at("lead.assigned.schema.json", "$defs/assignment/properties/method/enum"))


# -- AsyncAPI ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    return doc


def _deref(doc: Mapping[str, Any], node: Mapping[str, Any]) -> Any:
    while "$ref" in node and node["$ref"].startswith("#/"):
        target: Any = doc
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def _channel_by_address(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {channel["address"]: channel for channel in doc["channels"].values()}


def test_asyncapi_is_3_0_and_explains_namespace_and_versioning(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    description = asyncapi["info"]["description"]
    assert "HANDOFF_TOPIC_NAMESPACE" in description
    assert "Versioning" in description


def test_asyncapi_has_a_channel_for_every_topic_and_dead_letter_topic(asyncapi: dict[str, Any]) -> None:
    consuming = {"scoring": scoring_consumer.CONSUMES, "routing": routing_consumer.CONSUMES}
    expected = set(EVENT_TOPICS.values()) | {dead_letter_topic(service) for service in consuming}
    assert set(_channel_by_address(asyncapi)) == expected


@pytest.mark.parametrize("event_type", sorted(EVENT_TOPICS))
def test_every_event_type_is_a_message_on_its_topic(asyncapi: dict[str, Any], event_type: str) -> None:
    channel = _channel_by_address(asyncapi)[EVENT_TOPICS[event_type]]
    messages = {m["name"]: m for m in (_deref(asyncapi, ref) for ref in channel["messages"].values())}
    message = messages[event_type]
    assert message["payload"]["schema"]["$ref"] == f"./events/{event_type}.schema.json"
    assert message["payload"]["schemaFormat"] == "application/schema+json;version=2020-12"
    traits = [_deref(asyncapi, trait) for trait in message["traits"]]
    assert any(t["headers"]["schema"]["$ref"] == "./cloudevent-headers.schema.json" for t in traits)
    assert any(t["bindings"]["kafka"]["key"]["format"] == "uuid" for t in traits)


def _operations(doc: Mapping[str, Any], service: str, action: str) -> dict[str, set[str]]:
    """Channel address -> message names, for one service's operations of one kind (by tag)."""
    found: dict[str, set[str]] = {}
    for operation in doc["operations"].values():
        tags = {_deref(doc, tag)["name"] for tag in operation["tags"]}
        if service not in tags or operation["action"] != action:
            continue
        address = _deref(doc, operation["channel"])["address"]
        names = {_deref(doc, m)["name"] for m in operation["messages"]}
        found.setdefault(address, set()).update(names)
    return found


def test_asyncapi_operations_match_what_each_service_consumes_and_produces(asyncapi: dict[str, Any]) -> None:
    # A type is handled one event at a time or a poll at a time (batch handlers); either way it is consumed.
    scorer = scoring_handlers.Scoring(ScoringSettings(), None)
    router = routing_handlers.Router(RoutingSettings())
    scoring = {**scoring_consumer.event_handlers(scorer), **scoring_consumer.batch_handlers(scorer)}
    routing = {**routing_consumer.event_handlers(router), **routing_consumer.batch_handlers(router)}
    for service, module, handled in (
        ("scoring", scoring_consumer, scoring),
        ("routing", routing_consumer, routing),
    ):
        received = _operations(asyncapi, service, "receive")
        assert set(received) == set(module.CONSUMES), service
        # The messages a service receives are exactly the event types it has a handler for.
        assert set().union(*received.values()) == set(handled), service
        sent = _operations(asyncapi, service, "send")
        assert set(sent) == {*module.PRODUCES, dead_letter_topic(service)}, service
    ingest_topics = set(EVENT_TOPICS.values()) - set(scoring_consumer.PRODUCES) - set(routing_consumer.PRODUCES)
    assert set(_operations(asyncapi, "ingest", "send")) == ingest_topics
    assert _operations(asyncapi, "ingest", "receive") == {}


def test_asyncapi_consumer_groups_are_the_services_groups(asyncapi: dict[str, Any]) -> None:
    for settings in (ScoringSettings(topic_namespace=""), RoutingSettings(topic_namespace="")):
        for operation in asyncapi["operations"].values():
            tags = {_deref(asyncapi, tag)["name"] for tag in operation["tags"]}
            if operation["action"] == "receive" and settings.service_name in tags:
                assert operation["bindings"]["kafka"]["groupId"]["const"] == settings.consumer_group


# -- events the real code builds -----------------------------------------------------------------------------


class _Rows:
    """A query result: `row` for first(), else nothing found."""

    def __init__(self, row: tuple[Any, ...] | None = None) -> None:
        self.row = row

    def first(self) -> tuple[Any, ...] | None:
        return self.row

    def scalar_one_or_none(self) -> None:
        return None

    def all(self) -> list[tuple[Any, ...]]:
        """No webhook endpoints are registered in these tests."""
        return [self.row] if self.row is not None else []

    def scalars(self) -> list[Any]:
        return []


class RecordingSession:
    """Stands in for AsyncSession where a handler only adds rows and writes the outbox; keeps the outbox rows.

    Every query finds nothing, except `earlier`: the row answering ingest's repeat-lead look-up.
    """

    def __init__(self, earlier: tuple[Any, ...] | None = None) -> None:
        self.added: list[Any] = []
        self.outbox: list[dict[str, Any]] = []
        self.info: dict[str, Any] = {}
        self._earlier = earlier
        # Metrics hook "after_commit" on the sync session; an unbound one takes the listener and never commits.
        self.sync_session = Session()

    def add(self, row: Any) -> None:
        self.added.append(row)

    def add_all(self, rows: Any) -> None:
        self.added.extend(rows)

    async def flush(self) -> None:
        return None

    async def connection(self) -> Any:
        # The outbox asks which database it writes to (PostgreSQL also NOTIFYs the relay): this one is SQLite-like.
        return SimpleNamespace(dialect=SimpleNamespace(name="sqlite", driver="pysqlite"))

    async def execute(self, statement: Any, params: Any = None) -> _Rows:
        if isinstance(statement, Insert) and statement.table.name == "outbox":
            self.outbox.extend(params)
            return _Rows()
        if self._earlier is not None and "lead_identities" in str(statement):
            return _Rows(self._earlier)
        return _Rows()

    async def run_sync(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        # Store code that runs a few statements in one greenlet hop gets this stand-in as its sync session.
        return fn(SimpleNamespace(connection=lambda: SimpleNamespace(execute=lambda *_: _Rows())), *args, **kwargs)


@dataclass(frozen=True)
class Record:
    """One Kafka record as the outbox relay would produce it."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = loads(self.value)
        return data

    def problems(self) -> list[str]:
        return validate_record(self.topic, self.key, self.value, self.headers)


def _from_outbox(row: Mapping[str, Any]) -> Record:
    # Exactly what OutboxRelay sends: the stored headers re-encoded, key and value as stored.
    headers = [(name, value.encode()) for name, value in loads(row["headers"])]
    return Record(row["topic"], row["key"], row["value"], headers)


def _from_event(event: Event) -> Record:
    return Record(EVENT_TOPICS[event.type], event.key(), event.value(), event.headers())


def _normalized() -> dict[str, Any]:
    lead: dict[str, Any] = normalize_lead(RAW_LEAD, now=NOW).to_dict()
    return lead


def _source() -> Source:
    return Source(id="4a9e2b1c-0d3f-4e5a-8b7c-6d5e4f3a2b1c", kind="typeform", name="Demo form")


async def _accept(**kwargs: Any) -> tuple[Record, RecordingSession]:
    settings = IngestSettings(topic_namespace="", repeat_window_hours=kwargs.pop("repeat_window_hours", 0))
    session = RecordingSession(earlier=kwargs.pop("earlier", None))
    accepted = await ingest_handlers.accept_lead(
        session,  # type: ignore[arg-type]
        settings,
        raw=kwargs.pop("raw", RAW_LEAD),
        now=NOW,
        correlation_id=CORRELATION_ID,
        **kwargs,
    )
    assert accepted.status == "accepted"
    (row,) = session.outbox
    return _from_outbox(row), session


async def test_lead_received_from_accept_lead_fits_its_contract() -> None:
    record, _ = await _accept(source=_source(), external_id="tf-123")
    assert record.problems() == []
    assert record.data["lead"]["country"] == "GB"


async def test_lead_received_for_an_api_lead_that_repeats_an_earlier_one_fits_its_contract() -> None:
    record, _ = await _accept(source=None, raw={"email": "a@b.co"}, repeat_window_hours=72, earlier=(EARLIER_LEAD_ID,))
    assert record.problems() == []
    assert record.data["duplicate_of"] == EARLIER_LEAD_ID
    assert record.data["source"]["id"] is None


async def test_lead_received_for_a_lenient_platform_lead_fits_its_contract() -> None:
    raw = {"email": "pat@example.org", "phone": "not a phone", "country": "Atlantis", "x" * 80: "v" * 3000}
    lead = normalize_lead(raw, now=NOW, strict=False)
    record, _ = await _accept(source=_source(), raw=raw, normalized=lead, is_test=True)
    assert record.problems() == []
    assert record.data["lead"]["quality"] == {
        "flags": ["country_unknown", "phone_unparsed"],
        "raw": {"country": "Atlantis", "phone": "not a phone"},
    }


async def test_lead_erased_from_erase_lead_fits_its_contract() -> None:
    session = RecordingSession()
    lead = Lead(id=LEAD_ID, erased_at=None, data=_normalized())
    await ingest_handlers.erase_lead(session, IngestSettings(topic_namespace=""), lead, NOW, CORRELATION_ID)  # type: ignore[arg-type]
    (row,) = session.outbox
    record = _from_outbox(row)
    assert record.problems() == []
    assert record.data == {"lead_id": LEAD_ID, "erased_at": NOW.isoformat()}


def _scored_data(lead: dict[str, Any], *, provider_status: str, outcomes: int) -> dict[str, Any]:
    """lead.scored's data as Scoring.on_received assembles it, from the real enrichment, score and model."""
    received = {
        "lead_id": LEAD_ID,
        "source": ingest_handlers.source_view(_source()),
        "external_id": None,
        "is_test": False,
        "duplicate_of": None,
        "received_at": (NOW - timedelta(seconds=2)).isoformat(),
    }
    firmographic = Firmographic(domain="acme.io", name="Acme", employee_band="51-200", country="GB")
    provider = {"company": {"industry": "Software", "revenue_band": "10M-50M"}, "seniority": "vp"}
    enrichment = enrich(
        lead,
        firmographic=firmographic if lead else None,
        provider_result=provider if provider_status == "ok" else None,
        provider_status=provider_status,
    )
    ruleset = load_ruleset(DEFAULT_RULESET_YAML)
    context = {"source": received["source"], "is_test": False, "duplicate_of": None, "repeat_count": 0}
    score = score_lead(lead, enrichment, ruleset, context=context)
    features = outcome_features(lead, enrichment.as_fields(), context=context)
    counts = OutcomeCounts()
    for i in range(outcomes):
        # Won leads looked like this one, lost ones shared only two of its features: the odds have reasons.
        won = i % 2 == 0
        counts.record(features if won else features[:2], won=won)
    conversion = conversion_probability(features, counts, min_outcomes=30)
    return {
        **received,
        "scored_at": NOW.isoformat(),
        "lead": lead,
        "enrichment": enrichment.to_dict(),
        "score": score.to_dict(),
        "conversion": scoring_handlers._conversion_dict(conversion),
    }


@pytest.mark.parametrize(
    ("provider_status", "outcomes"), [("ok", 60), ("disabled", 0), ("timeout", 5), ("circuit_open", 45)]
)
def test_lead_scored_fits_its_contract(provider_status: str, outcomes: int) -> None:
    data = _scored_data(_normalized(), provider_status=provider_status, outcomes=outcomes)
    event = Event(type="lead.scored", source=scoring_handlers.EVENT_SOURCE, subject=LEAD_ID, time=NOW, data=data)
    assert _from_event(event).problems() == []


def test_lead_scored_with_conversion_odds_has_factors() -> None:
    data = _scored_data(_normalized(), provider_status="ok", outcomes=60)
    assert data["conversion"]["status"] == "ok"
    assert data["conversion"]["factors_for"] or data["conversion"]["factors_against"]
    assert validate_event("lead.scored", data) == []


def test_lead_scored_for_a_lead_erased_before_scoring_fits_its_contract() -> None:
    data = _scored_data({}, provider_status="disabled", outcomes=0)
    assert data["lead"] == {}
    assert validate_event("lead.scored", data) == []


# Routing: the decision comes from the real route(); the event data from Router._assignment_data.

TEAM = Team(id="sales", name="Sales")
REPS = [
    Rep(id="ana", name="Ana", email="ana@example.com", team="sales", hours=WorkingHours.always()),
    Rep(id="ben", name="Ben", email="ben@example.com", team="sales", status="away"),
    Rep(id="cy", name="Cy", email="cy@example.com", team="sales", timezone="America/Los_Angeles"),
]
ROUTER = routing_handlers.Router(RoutingSettings(topic_namespace="", sla_business_hours=False))
ROSTER = RoutingRoster(1, [TEAM], REPS)


def _view() -> dict[str, Any]:
    scored = _scored_data(_normalized(), provider_status="ok", outcomes=0)
    # What Router.on_scored keeps of lead.scored.
    return {key: scored[key] for key in ("lead", "enrichment", "score", "source", "is_test", "duplicate_of")}


def _decide(reps: list[Rep], options: dict[str, Any] | None = None, exclude: frozenset[str] = frozenset()) -> Decision:
    rule: dict[str, Any] = {"id": "everyone", "action": {"team": "sales", "method": "round_robin"}}
    if options:
        rule["options"] = options
    rules = load_rules({"fallback_team": "sales", "rules": [rule]})
    return route(
        _view(),
        rules=rules,
        teams=[TEAM],
        reps=reps,
        loads={},
        rotation={},
        accounts={},
        previous_rep=None,
        exclude=exclude,
        now=NOW,
    )


def _lead_row(view: dict[str, Any]) -> LeadRow:
    return LeadRow(
        lead_id=LEAD_ID,
        status="new",
        grade=view["score"]["grade"],
        source_kind=view["source"]["kind"],
        duplicate_of=None,
        is_test=False,
        view=view,
        received_at=NOW - timedelta(seconds=2),
        routed_at=NOW,
        reassignments=0,
    )


def _assignment(lead: LeadRow, decision: Decision, *, id: int, previous: AssignmentRow | None = None) -> AssignmentRow:
    """The assignment row Router.assign writes for a decision, SLA clock included."""
    policy = routing_decide.policy_for(ROUTER, decision, ROSTER, lead.grade)
    rep, team = ROSTER.rep(decision.rep_id), ROSTER.team(decision.team_id)
    due = None
    if policy is not None and decision.outcome in ("assigned", "queued"):
        hours, tz = routing_clock_of(rep, team)
        due = sla_deadline(NOW, policy.minutes, business_hours=policy.business_hours, hours=hours, tz=tz)
    return AssignmentRow(
        id=id,
        lead_id=lead.lead_id,
        outcome=decision.outcome,
        rep_id=decision.rep_id,
        team_id=decision.team_id,
        rule_id=decision.rule_id,
        ruleset_version=decision.ruleset_version,
        method=decision.method,
        reason=decision.reason,
        decision=decision.to_dict(),
        attempt=previous.attempt + 1 if previous else 1,
        assigned_at=NOW,
        sla_policy=policy.grade if policy and due else None,
        sla_minutes=policy.minutes if policy and due else None,
        sla_business_hours=policy.business_hours if policy and due else None,
        sla_due_at=due,
    )


def _assignment_event(
    event_type: str,
    decision: Decision,
    *,
    previous: AssignmentRow | None = None,
    end_reason: str | None = None,
) -> tuple[Event, AssignmentRow, LeadRow]:
    lead = _lead_row(_view())
    row = _assignment(lead, decision, id=(previous.id + 1) if previous else 1, previous=previous)
    data = routing_assign.assignment_data(lead, row, decision, ROSTER.rep(decision.rep_id), previous, end_reason)
    event = Event(
        type=event_type,
        source=routing_handlers.EVENT_SOURCE,
        subject=LEAD_ID,
        time=NOW,
        correlation_id=CORRELATION_ID,
        data=data,
    )
    return event, row, lead


@pytest.mark.parametrize(
    ("reps", "options", "outcome"),
    [
        (REPS, None, "assigned"),
        ([REPS[1]], None, "queued"),
        ([REPS[2]], {"outside_hours": "hold"}, "held"),
    ],
    ids=["assigned", "queued", "held"],
)
def test_lead_assigned_fits_its_contract(reps: list[Rep], options: dict[str, Any] | None, outcome: str) -> None:
    decision = _decide(reps, options)
    assert decision.outcome == outcome
    event, _, _ = _assignment_event("lead.assigned", decision)
    assert _from_event(event).problems() == []


def test_lead_assigned_lists_candidates_with_reasons() -> None:
    event, _, _ = _assignment_event("lead.assigned", _decide(REPS))
    reasons = {c["rep_id"]: c["excluded_because"] for c in event.data["candidates"]}
    assert reasons["ben"] == ["status:away"]
    assert event.data["sla"]["policy"] == event.data["score"]["grade"]


def test_lead_reassigned_after_a_breach_fits_its_contract() -> None:
    _, first, _ = _assignment_event("lead.assigned", _decide(REPS))
    decision = _decide(REPS, {"outside_hours": "assign"}, exclude=frozenset({"ana"}))
    event, _, _ = _assignment_event("lead.reassigned", decision, previous=first, end_reason="sla_breach")
    assert _from_event(event).problems() == []
    assert event.data["previous_rep_id"] == "ana" and event.data["attempt"] == 2


@pytest.mark.parametrize(("kind", "fraction"), [("lead.sla_warning", 0.5), ("lead.sla_breached", None)])
async def test_sla_notices_from_the_router_fit_their_contract(kind: str, fraction: float | None) -> None:
    _, assignment, lead = _assignment_event("lead.assigned", _decide(REPS))
    due = assignment.sla_due_at if fraction is None else NOW + timedelta(minutes=2)
    assert due is not None
    timer = SlaTimer(
        lead_id=LEAD_ID,
        assignment_id=assignment.id,
        kind="warning" if fraction else "breach",
        fraction=fraction,
        due_at=due,
    )
    session = RecordingSession()
    notice = routing_notices.sla_event(kind, lead, assignment, timer, due + timedelta(milliseconds=40))
    await routing_notices.emit_sla(ROUTER, session, [notice])  # type: ignore[arg-type]
    (row,) = session.outbox
    record = _from_outbox(row)
    assert record.problems() == []
    assert record.data["late_ms"] == 40
    # A timer caused it, not a request: no correlation id, and the contract allows that.
    assert "ce_correlationid" not in dict(record.headers)


async def _outcome(kind: str, detail: dict[str, Any]) -> Record:
    session = RecordingSession()
    await routing_publish(ROUTER, session, [routing_event(kind, LEAD_ID, detail, NOW, CORRELATION_ID)])  # type: ignore[arg-type]
    (row,) = session.outbox
    return _from_outbox(row)


@pytest.mark.parametrize(
    ("kind", "action", "extra"),
    [
        ("lead.accepted", "accept", {}),
        ("lead.rejected", "reject", {"reason": "wrong territory"}),
        ("lead.converted", "convert", {"reason": None}),
        ("lead.disqualified", "disqualify", {"reason": "student"}),
    ],
)
async def test_rep_outcomes_fit_their_contract(kind: str, action: str, extra: dict[str, Any]) -> None:
    # The detail dict Router.act builds for each action.
    detail = {"lead_id": LEAD_ID, "rep_id": "ana", "action": action, "at": NOW.isoformat(), **extra}
    assert (await _outcome(kind, detail)).problems() == []


async def test_first_touch_with_speed_to_lead_facts_fits_its_contract() -> None:
    _, assignment, lead = _assignment_event("lead.assigned", _decide(REPS))
    touched_at = NOW + timedelta(minutes=3)
    detail = {"lead_id": LEAD_ID, "rep_id": "ana", "action": "touch", "at": touched_at.isoformat()}
    rep = ROSTER.rep(assignment.rep_id)
    hours = (rep.hours, rep.timezone) if rep else None
    detail.update(touch_facts(lead.routed_at, assignment.sla_due_at, touched_at, hours))
    record = await _outcome("lead.touched", detail)
    assert record.problems() == []
    assert record.data["within_sla"] is True


async def test_a_later_touch_without_facts_fits_its_contract() -> None:
    detail = {"lead_id": LEAD_ID, "rep_id": None, "action": "touch", "at": NOW.isoformat()}
    assert (await _outcome("lead.touched", detail)).problems() == []


class _Found(_Rows):
    def __init__(self, row: Any) -> None:
        super().__init__()
        self.found = row

    def scalar_one_or_none(self) -> Any:
        return self.found


class OpenLeadSession(RecordingSession):
    """A RecordingSession whose open lead has `current` as its running assignment, and the test roster."""

    def __init__(self, current: AssignmentRow) -> None:
        super().__init__()
        self.current = current
        self.info["routing_roster"] = ROSTER  # what Router.roster() reads first in a transaction

    async def execute(self, statement: Any, params: Any = None) -> _Rows:
        if not isinstance(statement, Insert) and "FROM assignments" in str(statement):
            return _Found(self.current)
        return await super().execute(statement, params)


@pytest.mark.parametrize("hotter", [True, False], ids=["tightened", "kept"])
async def test_lead_resubmitted_from_the_router_fits_its_contract(hotter: bool) -> None:
    _, assignment, lead = _assignment_event("lead.assigned", _decide(REPS))
    lead.grade, assignment.sla_due_at = "C", NOW + timedelta(hours=8)  # an eight-hour clock runs
    scored = _scored_data(_normalized(), provider_status="ok", outcomes=0)
    scored["lead_id"] = REPEAT_ID
    scored["lead"]["form_id"] = "demo-request"
    scored["score"]["grade"] = "A" if hotter else "D"
    view = _view() | {"lead": scored["lead"], "score": scored["score"], "quality": {"flags": ["phone_unparsed"]}}
    view["duplicate_of"] = LEAD_ID
    event = Event(type="lead.scored", source=scoring_handlers.EVENT_SOURCE, subject=REPEAT_ID, time=NOW, data=scored)
    session = OpenLeadSession(assignment)
    later = NOW + timedelta(minutes=1)
    await routing_assign.join_open_lead(ROUTER, session, lead, REPEAT_ID, LEAD_ID, view, event, later, erased=False)  # type: ignore[arg-type]
    (row,) = session.outbox
    record = _from_outbox(row)
    assert record.problems() == []
    assert record.topic == EVENT_TOPICS["lead.resubmitted"] and record.key == LEAD_ID.encode()
    assert record.data["repeat_lead_id"] == REPEAT_ID and record.data["lead"]["form_id"] == "demo-request"
    assert record.data["clock_tightened"] is hotter and record.data["grade_raised"] is hotter
    expected_due = later + timedelta(minutes=5) if hotter else NOW + timedelta(hours=8)
    assert record.data["sla_due_at"] == expected_due.isoformat()


# -- what the contracts refuse -------------------------------------------------------------------------------


async def test_an_event_without_lead_id_fails_naming_the_field() -> None:
    record, _ = await _accept(source=_source())
    data = record.data
    del data["lead_id"]
    problems = validate_event("lead.received", data)
    assert problems and all("lead_id" in p for p in problems)


def test_an_unknown_grade_fails_naming_the_field() -> None:
    data = _scored_data(_normalized(), provider_status="ok", outcomes=0)
    data["score"]["grade"] = "E"
    (problem,) = validate_event("lead.scored", data)
    assert problem.startswith("score/grade:") and "'E'" in problem


def test_a_bad_field_inside_a_nullable_or_erasable_object_is_named() -> None:
    data = _scored_data(_normalized(), provider_status="ok", outcomes=0)
    data["lead"]["country"] = "United Kingdom"
    (problem,) = validate_event("lead.scored", data)
    assert problem.startswith("lead/country:")


def test_a_time_without_offset_is_not_rfc_3339() -> None:
    (problem,) = validate_event("lead.erased", {"lead_id": LEAD_ID, "erased_at": "2025-03-05T15:00:00"})
    assert problem.startswith("erased_at:")


def test_reassigned_must_say_why() -> None:
    event, _, _ = _assignment_event("lead.assigned", _decide(REPS))
    problems = validate_event("lead.reassigned", event.data)
    assert any(p.startswith("attempt:") for p in problems)
    assert any(p.startswith("reassign_reason:") for p in problems)


def test_an_unknown_event_type_has_no_contract() -> None:
    (problem,) = validate_event("lead.teleported", {"lead_id": LEAD_ID})
    assert "lead.teleported" in problem


def _headers(**changes: bytes | None) -> list[tuple[str, bytes]]:
    event = Event(
        type="lead.erased",
        source=ingest_handlers.EVENT_SOURCE,
        subject=LEAD_ID,
        time=NOW,
        data={"lead_id": LEAD_ID, "erased_at": NOW.isoformat()},
        correlation_id=CORRELATION_ID,
    )
    headers = dict(event.headers())
    for name, value in changes.items():
        name = name.replace("content_type", "content-type")
        if value is None:
            headers.pop(name)
        else:
            headers[name] = value
    return list(headers.items())


def test_the_envelope_headers_fit_their_contract() -> None:
    assert validate_headers(_headers()) == []


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"ce_id": None}, "ce_id"),
        ({"ce_time": None}, "ce_time"),
        ({"ce_specversion": b"0.3"}, "ce_specversion"),
        ({"ce_source": b"/handoff/routing"}, "ce_source"),
        ({"ce_subject": b"lead-1"}, "ce_subject"),
        ({"ce_type": b"lead.teleported"}, "ce_type"),
        ({"content_type": b"application/cloudevents+json"}, "content-type"),
    ],
)
def test_bad_envelope_headers_are_named(changes: dict[str, bytes | None], named: str) -> None:
    problems = validate_headers(_headers(**changes))
    assert problems and any(named in p for p in problems)


def test_a_repeated_or_undecodable_header_is_refused() -> None:
    assert validate_headers([*_headers(), ("ce_id", b"again")]) == ["ce_id: header appears more than once"]
    assert validate_headers([*_headers(), ("x-trace", b"\xff")]) == ["x-trace: header value is not UTF-8"]


async def test_a_record_on_the_wrong_topic_or_key_is_refused() -> None:
    record, _ = await _accept(source=_source())
    assert record.problems() == []
    wrong_topic = validate_record("leads.scored.v1", record.key, record.value, record.headers)
    assert any(p.startswith("(topic):") for p in wrong_topic)
    wrong_key = validate_record(record.topic, b"another-lead", record.value, record.headers)
    assert any(p.startswith("(key):") for p in wrong_key)
    namespaced = validate_record("ci-7." + record.topic, record.key, record.value, record.headers, namespace="ci-7.")
    assert namespaced == []


# -- interoperability with the CloudEvents SDK ---------------------------------------------------------------


async def test_the_cloudevents_sdk_reads_our_records() -> None:
    record, _ = await _accept(source=_source())
    message = ce_kafka.KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
    event = ce_kafka.from_binary_event(message)
    ours = Event.from_record(record.key, record.value, record.headers)
    assert event.get_specversion() == "1.0"
    assert event.get_id() == ours.id
    assert event.get_type() == "lead.received"
    assert event.get_source() == ingest_handlers.EVENT_SOURCE
    assert event.get_subject() == ours.subject == record.data["lead_id"]
    assert event.get_time() == NOW
    assert event.get_datacontenttype() == "application/json"
    assert event.get_extension("correlationid") == CORRELATION_ID
    # The binding maps the record key to the partitionkey extension: the lead id.
    assert event.get_extension("partitionkey") == ours.subject
    assert event.get_data() == record.data


def test_we_read_records_the_cloudevents_sdk_writes() -> None:
    from cloudevents.core.v1.event import CloudEvent

    data = {"lead_id": LEAD_ID, "erased_at": NOW.isoformat()}
    sdk_event = CloudEvent(
        attributes={
            "id": "evt-1",
            "type": "lead.erased",
            "source": ingest_handlers.EVENT_SOURCE,
            "subject": LEAD_ID,
            "time": NOW,
            "datacontenttype": "application/json",
            "correlationid": CORRELATION_ID,
            "partitionkey": LEAD_ID,
        },
        data=data,
    )
    message = ce_kafka.to_binary_event(sdk_event)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    headers = list(message.headers.items())
    assert validate_record(EVENT_TOPICS["lead.erased"], key, message.value, headers) == []
    event = Event.from_record(key, message.value, headers)
    assert (event.id, event.type, event.subject, event.time) == ("evt-1", "lead.erased", LEAD_ID, NOW)
    assert event.correlation_id == CORRELATION_ID
    assert event.data == data
