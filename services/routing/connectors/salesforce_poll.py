"""Salesforce, inbound: a polling cursor on `SystemModstamp` turns the CRM's activity into rep actions.

Each round reads, per object, what changed since its cursor minus an overlap, oldest first, a page at a time:
- closed Tasks and Events whose WhoId is a linked lead -> `touch` (it stops the clock when the activity's owner is the
  lead's rep; anyone else's is written on the timeline only);
- Leads whose Status is one the settings map -> `convert` or `disqualify`.
Each goes through routing.usecases.crm.signal, idempotent on its source ref ("Task:<Id>", "Lead:<Id>:<Status>"),
and the page's signals commit in the transaction that moves the cursor, so the cursor only advances past what has
acted. The overlap re-reads records stamped late or at an equal timestamp; re-reading one does nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog

from common.crypto import SecretKeyError
from common.db import Database
from common.db_errors import is_db_error
from common.egress import Resolver, system_resolver
from common.poll import poll_until
from routing.connectors.base import ConnectorDeps
from routing.connectors.salesforce import SIGNAL_KINDS, SYSTEM, ClientCache, SalesforceConfig
from routing.connectors.salesforce_api import (
    SalesforceClient,
    SalesforceError,
    parse_datetime,
    soql_datetime,
    soql_string,
)
from routing.settings import RoutingSettings
from routing.store.salesforce import SalesforceRepository
from routing.usecases import crm
from routing.usecases.context import RoutingContext

log = structlog.get_logger(__name__)
ACTIVITIES = ("Task", "Event")


def activity_query(sobject: str, since: datetime) -> str:
    """Tasks count once closed (a logged call or email is saved Completed; an open Task is a to-do, not a touch,
    and counts when it is completed, which stamps it again); Events count as they are."""
    closed = " AND IsClosed = true" if sobject == "Task" else ""
    return (
        f"SELECT Id, WhoId, OwnerId, SystemModstamp FROM {sobject} "  # noqa: S608 (SOQL; Task or Event)
        f"WHERE SystemModstamp >= {soql_datetime(since)} AND WhoId != null{closed} ORDER BY SystemModstamp, Id"
    )


def status_query(statuses: Mapping[str, str], since: datetime) -> str:
    listed = ", ".join(soql_string(status) for status in sorted(statuses))
    return (
        "SELECT Id, Status, OwnerId, LastModifiedById, SystemModstamp FROM Lead "  # noqa: S608 (SOQL, escaped)
        f"WHERE SystemModstamp >= {soql_datetime(since)} AND Status IN ({listed}) ORDER BY SystemModstamp, Id"
    )


class SalesforcePoller:
    """The routing app's periodic job; every routing process may run one (the signals dedupe)."""

    def __init__(
        self, db: Database, rt: RoutingContext, settings: RoutingSettings, resolver: Resolver = system_resolver
    ) -> None:
        self._db = db
        self._rt = rt
        self._settings = settings
        self._clients = ClientCache(ConnectorDeps(db, settings, rt.clock, resolver))
        self._box = settings.secret_box()
        self._stop = asyncio.Event()
        self.signals: dict[str, int] = {}  # result -> count, since start (tests and logs)

    async def run(self) -> None:
        try:
            await poll_until(
                self._stop, self.poll_once, interval_s=self._settings.salesforce_poll_interval_s, name="salesforce_poll"
            )
        finally:
            await self._clients.close()

    async def stop(self) -> None:
        self._stop.set()

    async def poll_once(self) -> bool | float:
        """One round over Tasks, Events and Lead statuses; False to wait the interval, seconds after a limit."""
        async with self._db.read() as session:
            enabled, stored, cursor = await SalesforceRepository(session).cursor(SYSTEM)
        if not enabled or stored is None:
            return False
        try:
            config = SalesforceConfig.from_stored(stored, self._box)
        except (SecretKeyError, KeyError) as exc:
            log.error("salesforce_settings_unreadable", error=type(exc).__name__)
            return False
        client = self._clients.get(config)
        statuses = {k: v for k, v in config.statuses.items() if v in SIGNAL_KINDS}
        try:
            for sobject in ACTIVITIES:
                await self._read(client, sobject, activity_query(sobject, self._since(cursor.get(sobject))))
            if statuses:
                await self._read(client, "Lead", status_query(statuses, self._since(cursor.get("Lead"))), statuses)
        except SalesforceError as exc:
            log.warning("salesforce_poll_failed", status=exc.status, code=exc.code, error=str(exc))
            if exc.rate_limited:
                return exc.retry_after_s or self._settings.salesforce_limit_pause_s
        return False

    def _since(self, stamp: str | None) -> datetime:
        """Where a read starts: the cursor minus the overlap; with no cursor yet, the overlap before now (history
        from before the connector was set up has no linked leads)."""
        overlap = timedelta(seconds=self._settings.salesforce_poll_overlap_s)
        base = parse_datetime(stamp) if stamp else self._rt.clock()
        return base - overlap

    async def _read(
        self, client: SalesforceClient, sobject: str, soql: str, statuses: Mapping[str, str] | None = None
    ) -> None:
        async for page in client.query_pages(soql):
            if page:
                await self._act_on(sobject, page, statuses)

    async def _act_on(self, sobject: str, page: list[dict[str, Any]], statuses: Mapping[str, str] | None) -> None:
        """One page's signals and the cursor past them, in one transaction."""
        key = "Id" if sobject == "Lead" else "WhoId"
        newest = max(parse_datetime(str(r["SystemModstamp"])) for r in page)
        async with self._db.transaction() as session:
            repo = SalesforceRepository(session)
            linked = await repo.linked_leads(SYSTEM, (str(r[key]) for r in page if r.get(key)))
            for record in page:
                lead_id = linked.get(str(record.get(key) or ""))
                if lead_id is None:
                    continue  # a contact, or a lead Handoff never wrote: not ours
                if sobject == "Lead":
                    status = str(record.get("Status"))
                    kind = (statuses or {}).get(status)
                    if kind is None:
                        continue
                    ref, who = f"Lead:{record['Id']}:{status}", record.get("LastModifiedById")
                    detail = {"object": "Lead", "record_id": record["Id"], "reason": f"Lead Status {status}"}
                else:
                    kind, ref, who = "touch", f"{sobject}:{record['Id']}", record.get("OwnerId")
                    detail = {"object": sobject, "record_id": record["Id"]}
                try:
                    async with session.begin_nested():
                        result = await crm.signal(
                            self._rt,
                            session,
                            SYSTEM,
                            kind=kind,
                            source_ref=ref,
                            lead_id=lead_id,
                            external_owner_id=str(who) if who else None,
                            occurred_at=parse_datetime(str(record["SystemModstamp"])),
                            detail=detail,
                        )
                except Exception as exc:
                    if is_db_error(exc):
                        raise  # the store's trouble: the page is read again next round
                    # A record this code cannot act on must not hold the cursor (and every later signal) back.
                    log.exception("salesforce_signal_failed", lead_id=lead_id, kind=kind, ref=ref)
                    self.signals["failed"] = self.signals.get("failed", 0) + 1
                    continue
                self.signals[result.result] = self.signals.get(result.result, 0) + 1
                if result.result != "duplicate":
                    log.info("salesforce_signal", lead_id=lead_id, kind=kind, result=result.result, ref=ref)
            await repo.advance_cursor(SYSTEM, sobject, newest)
