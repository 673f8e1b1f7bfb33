"""A Salesforce org on loopback: the documented subset of the REST API the connector uses, written from the public
reference (REST API Developer Guide: OAuth 2.0 client credentials flow, sObject Rows by External ID, sObject
create/update, Query with nextRecordsUrl, status codes and error responses).

- `POST /services/oauth2/token` (grant_type=client_credentials, client id and secret in the form or in HTTP Basic;
  or the JWT bearer grant, an RS256 assertion checked against `jwt_public_key`) answers
  `{access_token, instance_url, id, token_type, issued_at, signature}`, or 400 `{error, error_description}`.
- Every `/services/data/vNN.N/...` call needs `Authorization: Bearer <token>`; an unknown or expired one gets
  401 `[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]`.
- `PATCH /sobjects/Lead/<ExternalIdField>/<value>`: upsert; 201 `{id, success, errors, created: true}` on create,
  200 with `created: false` on update (API v46+); 404 NOT_FOUND for a field that is not an external id.
- `POST /sobjects/Lead` creates (201), `PATCH /sobjects/Lead/<Id>` updates (204), `GET /sobjects/Lead/<Id>` reads.
- `GET /query?q=<SOQL>`: the SELECT ... FROM ... WHERE (AND-ed comparisons, IN lists) ORDER BY ... LIMIT subset;
  pages of `page_size` records with `done: false` and `nextRecordsUrl` (`/services/data/vNN.N/query/<locator>`).
- Limits: `fail_next(...)` queues answers such as 403 REQUEST_LIMIT_EXCEEDED or 429 with Retry-After.

Error bodies are arrays of `{message, errorCode, fields?}`, as Salesforce's are. Tests act as the CRM's users
through `log_task`, `log_event` and `set_lead_status`, which stamp `SystemModstamp` (or take a given one).
"""

from __future__ import annotations

import base64
import functools
import itertools
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
import orjson

LEAD_FIELDS = frozenset(
    {
        "Id", "FirstName", "LastName", "Company", "Email", "Phone", "Title", "Website", "Country", "State",
        "City", "PostalCode", "Status", "OwnerId", "LeadSource", "Description", "IsConverted", "SystemModstamp",
        "LastModifiedById", "CreatedById",
    }
)  # fmt: skip
ACTIVITY_FIELDS = frozenset({"Id", "WhoId", "WhatId", "OwnerId", "CreatedById", "Subject", "SystemModstamp"})
TASK_FIELDS = ACTIVITY_FIELDS | {"Status", "IsClosed"}
USER_FIELDS = frozenset({"Id", "Email", "Name", "IsActive", "SystemModstamp"})
PREFIXES = {"Lead": "00Q", "User": "005", "Task": "00T", "Event": "00U"}
DEFAULT_LEAD_STATUS = "Open - Not Contacted"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_AUDIENCES = frozenset({"https://login.salesforce.com", "https://test.salesforce.com"})


class SoqlError(ValueError):
    """A query outside the subset this server understands (MALFORMED_QUERY)."""


def sf_time(value: datetime) -> str:
    """Salesforce's dateTime as REST returns it: 2026-12-03T02:49:52.000+0000."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def parse_sf_time(text: str) -> datetime:
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif re.search(r"[+-]\d{4}$", text):
        text = text[:-2] + ":" + text[-2:]
    return datetime.fromisoformat(text).astimezone(UTC)


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')"
    r"|(?P<dt>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d))"
    r"|(?P<num>\d+(?:\.\d+)?)"
    r"|(?P<op>!=|<>|<=|>=|=|<|>|\(|\)|,)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)


@dataclass
class Soql:
    fields: list[str]
    sobject: str
    where: list[tuple[str, str, Any]]  # (field, op, value or list of values), all AND-ed
    order_by: list[tuple[str, bool]]  # (field, descending)
    limit: int | None


def parse_soql(text: str) -> Soql:
    """The subset: SELECT f, ... FROM X [WHERE a op v AND b IN (v, ...)] [ORDER BY f [ASC|DESC], ...] [LIMIT n]."""
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise SoqlError(f"unexpected token at {position}: {text[position : position + 20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    stream = iter([*tokens, ("end", "")])
    current = next(stream)

    def take() -> tuple[str, str]:
        nonlocal current
        taken, current = current, next(stream)
        return taken

    def keyword(word: str) -> bool:
        if current[0] == "word" and current[1].upper() == word:
            take()
            return True
        return False

    def expect(word: str) -> None:
        if not keyword(word):
            raise SoqlError(f"expecting {word}, found {current[1]!r}")

    def value() -> Any:
        kind, raw = take()
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", raw[1:-1])
        if kind == "dt":
            return parse_sf_time(raw)
        if kind == "num":
            return float(raw)
        if kind == "word" and raw.lower() in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[raw.lower()]
        raise SoqlError(f"unexpected value {raw!r}")

    expect("SELECT")
    fields = [take()[1]]
    while current == ("op", ","):
        take()
        fields.append(take()[1])
    expect("FROM")
    sobject = take()[1]
    where: list[tuple[str, str, Any]] = []
    if keyword("WHERE"):
        while True:
            name = take()[1]
            if keyword("IN"):
                if take() != ("op", "("):
                    raise SoqlError("expecting ( after IN")
                values = [value()]
                while current == ("op", ","):
                    take()
                    values.append(value())
                if take() != ("op", ")"):
                    raise SoqlError("expecting ) after an IN list")
                where.append((name, "IN", values))
            else:
                kind, op = take()
                if kind != "op" or op in ("(", ")", ","):
                    raise SoqlError(f"unexpected operator {op!r}")
                where.append((name, "!=" if op == "<>" else op, value()))
            if not keyword("AND"):
                break
    order_by: list[tuple[str, bool]] = []
    if keyword("ORDER"):
        expect("BY")
        while True:
            name = take()[1]
            descending = keyword("DESC")
            keyword("ASC")
            order_by.append((name, descending))
            if current != ("op", ","):
                break
            take()
    limit = None
    if keyword("LIMIT"):
        limit = int(float(take()[1]))
    if current[0] != "end":
        raise SoqlError(f"unexpected {current[1]!r}")
    return Soql(fields, sobject, where, order_by, limit)


def _comparable(value: Any) -> Any:
    if isinstance(value, str):
        if re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+[+-]\d{4}", value):
            return parse_sf_time(value)
        return value.lower()  # SOQL compares text case-insensitively
    return value


def _matches(record: dict[str, Any], where: list[tuple[str, str, Any]]) -> bool:
    for name, op, wanted in where:
        have = _comparable(record.get(name))
        if op == "IN":
            if have not in [_comparable(w) for w in wanted]:
                return False
            continue
        want = _comparable(wanted)
        if op in ("=", "!="):
            if (have == want) != (op == "="):
                return False
            continue
        if have is None or want is None:
            return False
        if not {"<": have < want, "<=": have <= want, ">": have > want, ">=": have >= want}[op]:
            return False
    return True


def _sort_key(name: str, record: dict[str, Any]) -> tuple[bool, Any]:
    value = record.get(name)
    return (value is None, _comparable(value) if value is not None else "")


@dataclass
class Failure:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    only: str = ""  # a path fragment this failure waits for ("" = the next API call)


@dataclass
class SalesforceServer:
    """Starts on a free loopback port; state is plain dicts the tests read and write (under `lock`)."""

    client_id: str = "handoff-connected-app"
    client_secret: str = "s3cret-consumer-secret"
    api_version: str = "v60.0"
    page_size: int = 2000
    jwt_public_key: str | None = None  # PEM of the certificate's key uploaded to the connected app
    jwt_users: frozenset[str] = frozenset({"integration@handoff.example"})
    external_id_fields: frozenset[str] = frozenset({"Handoff_Lead_Id__c"})
    custom_lead_fields: frozenset[str] = frozenset({"Handoff_Lead_Id__c", "Handoff_Grade__c", "Handoff_SLA_Due__c"})
    port: int = 0
    records: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {"Lead": {}, "User": {}, "Task": {}, "Event": {}}
    )
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    tokens_issued: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _tokens: set[str] = field(default_factory=set)
    _failures: list[Failure] = field(default_factory=list)
    _cursors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the CRM's side, as its users act --------------------------------------------------------------------
    def new_id(self, sobject: str) -> str:
        return f"{PREFIXES[sobject]}{next(self._ids):015d}"

    def add_user(self, email: str, name: str = "", *, active: bool = True) -> str:
        with self.lock:
            user_id = self.new_id("User")
            self.records["User"][user_id] = {
                "Id": user_id, "Email": email, "Name": name or email, "IsActive": active,
                "SystemModstamp": sf_time(self.clock()),
            }  # fmt: skip
            return user_id

    def _activity(
        self, sobject: str, who_id: str, owner_id: str, subject: str, at: datetime | None, **extra: Any
    ) -> str:
        with self.lock:
            record_id = self.new_id(sobject)
            self.records[sobject][record_id] = {
                "Id": record_id, "WhoId": who_id, "WhatId": None, "OwnerId": owner_id, "CreatedById": owner_id,
                "Subject": subject, "SystemModstamp": sf_time(at or self.clock()), **extra,
            }  # fmt: skip
            return record_id

    def log_task(
        self, who_id: str, owner_id: str, subject: str = "Call", at: datetime | None = None, *, done: bool = True
    ) -> str:
        """A Task on a lead owned by `owner_id`: a logged call or email (saved Completed), or an open to-do."""
        status = "Completed" if done else "Not Started"
        return self._activity("Task", who_id, owner_id, subject, at, Status=status, IsClosed=done)

    def complete_task(self, task_id: str, at: datetime | None = None) -> None:
        with self.lock:
            task = self.records["Task"][task_id]
            task.update(Status="Completed", IsClosed=True, SystemModstamp=sf_time(at or self.clock()))

    def log_event(self, who_id: str, owner_id: str, subject: str = "Meeting", at: datetime | None = None) -> str:
        return self._activity("Event", who_id, owner_id, subject, at)

    def set_lead_status(self, lead_id: str, status: str, by: str, at: datetime | None = None) -> None:
        with self.lock:
            lead = self.records["Lead"][lead_id]
            lead.update(Status=status, LastModifiedById=by, SystemModstamp=sf_time(at or self.clock()))

    def lead_by(self, name: str, value: str) -> dict[str, Any] | None:
        with self.lock:
            found = [r for r in self.records["Lead"].values() if str(r.get(name) or "").lower() == value.lower()]
            return dict(found[0]) if found else None

    def expire_sessions(self) -> None:
        """Every access token stops working (as a session timeout or a revoked connected app does)."""
        with self.lock:
            self._tokens.clear()

    def fail_next(self, status: int, body: Any, headers: dict[str, str] | None = None, *, only: str = "") -> None:
        """The next API call (whose path contains `only`) gets this answer instead."""
        with self.lock:
            self._failures.append(Failure(status, body, headers or {}, only))

    def limit_exceeded(self, *, only: str = "") -> None:
        self.fail_next(403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
                       only=only)  # fmt: skip

    def calls(self, method: str = "", fragment: str = "") -> list[tuple[str, str, dict[str, str], bytes]]:
        with self.lock:
            return [r for r in self.requests if (not method or r[0] == method) and fragment in r[1]]

    # -- the API --------------------------------------------------------------------------------------------
    def _jwt_refusal(self, assertion: str) -> str | None:
        """Why a JWT bearer assertion is refused (None: accepted): RS256 under the app's certificate, iss the
        consumer key, sub a user allowed to the app, aud the login host, exp at most 3 minutes ahead."""
        if self.jwt_public_key is None:
            return "the connected app has no certificate"
        try:
            claims = jwt.decode(
                assertion, self.jwt_public_key, algorithms=["RS256"], audience=sorted(JWT_AUDIENCES),
                options={"require": ["iss", "sub", "aud", "exp"]},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            return f"invalid assertion ({type(exc).__name__})"
        if claims["iss"] != self.client_id:
            return "client identifier invalid"
        if claims["sub"] not in self.jwt_users:
            return "user hasn't approved this consumer"
        if claims["exp"] > self.clock().timestamp() + 300:
            return "expiration too far in the future"
        return None

    def _token(self, headers: dict[str, str], form: dict[str, str]) -> tuple[int, Any]:
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        basic = headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
        grant = form.get("grant_type")
        if grant == JWT_BEARER_GRANT:
            refusal = self._jwt_refusal(form.get("assertion", ""))
            if refusal:
                return 400, {"error": "invalid_grant", "error_description": refusal}
        elif grant != "client_credentials":
            return 400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"}
        elif client_id != self.client_id or not secrets.compare_digest(client_secret, self.client_secret):
            return 400, {"error": "invalid_client", "error_description": "invalid client credentials"}
        with self.lock:
            token = "00D000000000001!" + secrets.token_urlsafe(24)
            self._tokens.add(token)
            self.tokens_issued += 1
        issued = str(int(self.clock().timestamp() * 1000))
        return 200, {
            "access_token": token, "instance_url": self.url, "token_type": "Bearer", "issued_at": issued,
            "id": f"{self.url}/id/00D000000000001AAA/005000000000000AAA", "scope": "api",
            "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
        }  # fmt: skip

    def _api(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        prefix = f"/services/data/{self.api_version}/"
        if not path.startswith(prefix):
            return 404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
        parts = [unquote(p) for p in path[len(prefix) :].strip("/").split("/")]
        if parts[0] == "query" and method == "GET":
            if len(parts) == 2:
                return self._more(parts[1])
            return self._query(query.get("q", ""))
        if parts[0] == "sobjects" and len(parts) >= 2 and parts[1] == "Lead":
            if len(parts) == 2 and method == "POST":
                return self._create(body)
            if len(parts) == 3:
                return self._by_id(method, parts[2], body)
            if len(parts) == 4 and method == "PATCH":
                return self._upsert(parts[2], parts[3], body)
        return 404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]

    def _check_fields(self, body: Any) -> tuple[int, Any] | None:
        if not isinstance(body, dict):
            return 400, [{"errorCode": "JSON_PARSER_ERROR", "message": "the body must be a JSON object"}]
        for name, value in body.items():
            if name not in LEAD_FIELDS | self.custom_lead_fields or name in ("Id", "SystemModstamp"):
                return 400, [{"errorCode": "INVALID_FIELD",
                              "message": f"No such column '{name}' on sobject of type Lead"}]  # fmt: skip
            if name == "OwnerId" and value not in self.records["User"]:
                return 400, [{"errorCode": "MALFORMED_ID", "fields": ["OwnerId"],
                              "message": f"Owner ID: id value of incorrect type: {value}"}]  # fmt: skip
        return None

    def _write(self, lead: dict[str, Any], body: dict[str, Any]) -> None:
        lead.update(body)
        lead["SystemModstamp"] = sf_time(self.clock())
        lead["LastModifiedById"] = "005000000000000AAA"  # the integration user

    def _create(self, body: Any, extra: dict[str, Any] | None = None) -> tuple[int, Any]:
        refused = self._check_fields(body)
        if refused:
            return refused
        missing = [name for name in ("LastName", "Company") if not body.get(name)]
        if missing:
            return 400, [{"errorCode": "REQUIRED_FIELD_MISSING", "fields": missing,
                          "message": f"Required fields are missing: {missing}"}]  # fmt: skip
        lead_id = self.new_id("Lead")
        lead = {"Id": lead_id, "Status": DEFAULT_LEAD_STATUS, "IsConverted": False, "CreatedById": "005000000000000AAA"}
        self._write(lead, {**body, **(extra or {})})
        self.records["Lead"][lead_id] = lead
        return 201, {"id": lead_id, "success": True, "errors": []}

    def _by_id(self, method: str, lead_id: str, body: Any) -> tuple[int, Any]:
        lead = self.records["Lead"].get(lead_id)
        if lead is None:
            return 404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
        if method == "GET":
            return 200, {"attributes": self._attributes("Lead", lead_id), **lead}
        if method != "PATCH":
            return 405, [{"errorCode": "METHOD_NOT_ALLOWED", "message": f"HTTP Method '{method}' not allowed"}]
        refused = self._check_fields(body)
        if refused:
            return refused
        self._write(lead, body)
        return 204, None

    def _upsert(self, name: str, value: str, body: Any) -> tuple[int, Any]:
        if name not in self.external_id_fields:
            return 404, [
                {
                    "errorCode": "NOT_FOUND",
                    "message": f"Provided external ID field does not exist or is not accessible: {name}",
                }
            ]
        matches = [lead for lead in self.records["Lead"].values() if lead.get(name) == value]
        if len(matches) > 1:
            return 300, [f"/services/data/{self.api_version}/sobjects/Lead/{m['Id']}" for m in matches]
        if not matches:
            status, answer = self._create(body, {name: value})
            return (201, {**answer, "created": True}) if status == 201 else (status, answer)
        refused = self._check_fields(body)
        if refused:
            return refused
        self._write(matches[0], body)
        return 200, {"id": matches[0]["Id"], "success": True, "errors": [], "created": False}

    def _attributes(self, sobject: str, record_id: str) -> dict[str, str]:
        return {"type": sobject, "url": f"/services/data/{self.api_version}/sobjects/{sobject}/{record_id}"}

    def _query(self, text: str) -> tuple[int, Any]:
        try:
            soql = parse_soql(text)
        except SoqlError as exc:
            return 400, [{"errorCode": "MALFORMED_QUERY", "message": str(exc)}]
        table = self.records.get(soql.sobject)
        allowed = {"Lead": LEAD_FIELDS | self.custom_lead_fields, "User": USER_FIELDS, "Task": TASK_FIELDS}.get(
            soql.sobject, ACTIVITY_FIELDS
        )
        if table is None:
            return 400, [{"errorCode": "INVALID_TYPE", "message": f"sObject type '{soql.sobject}' is not supported."}]
        for name in soql.fields + [w[0] for w in soql.where] + [o[0] for o in soql.order_by]:
            if name not in allowed:
                return 400, [{"errorCode": "INVALID_FIELD",
                              "message": f"No such column '{name}' on entity '{soql.sobject}'"}]  # fmt: skip
        rows = [r for r in table.values() if _matches(r, soql.where)]
        for name, descending in reversed(soql.order_by):
            rows.sort(key=functools.partial(_sort_key, name), reverse=descending)
        if soql.limit is not None:
            rows = rows[: soql.limit]
        records = [
            {"attributes": self._attributes(soql.sobject, r["Id"]), **{f: r.get(f) for f in soql.fields}} for r in rows
        ]
        return self._page(records, "01g" + secrets.token_hex(6), 0)

    def _page(self, records: list[dict[str, Any]], locator: str, offset: int) -> tuple[int, Any]:
        page = records[offset : offset + self.page_size]
        answer: dict[str, Any] = {"totalSize": len(records), "done": offset + len(page) >= len(records),
                                  "records": page}  # fmt: skip
        if not answer["done"]:
            nxt = offset + len(page)
            self._cursors[locator] = records
            answer["nextRecordsUrl"] = f"/services/data/{self.api_version}/query/{locator}-{nxt}"
        return 200, answer

    def _more(self, locator_and_offset: str) -> tuple[int, Any]:
        locator, _, offset = locator_and_offset.rpartition("-")
        records = self._cursors.get(locator)
        if records is None or not offset.isdigit():
            return 400, [{"errorCode": "INVALID_QUERY_LOCATOR", "message": "invalid query locator"}]
        return self._page(records, locator, int(offset))

    # -- plumbing -----------------------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any, dict[str, str]]:
        split = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        with self.lock:
            self.requests.append((method, target, headers, raw))
            if split.path == "/services/oauth2/token" and method == "POST":
                form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                status, body = self._token(headers, form)
                return status, body, {}
            auth = headers.get("authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self._tokens:
                return 401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], {}
            for failure in self._failures:
                if failure.only in split.path or failure.only in query.get("q", ""):
                    self._failures.remove(failure)
                    return failure.status, failure.body, failure.headers
            try:
                body = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                return 400, [{"errorCode": "JSON_PARSER_ERROR", "message": "malformed JSON"}], {}
            status, answer = self._api(method, split.path, query, body)
            return status, answer, {}

    def start(self) -> SalesforceServer:
        org = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, body, extra = org.handle(self.command, self.path, headers, raw)
                data = b"" if body is None else orjson.dumps(body)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                if data:
                    self.send_header("content-type", "application/json;charset=UTF-8")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
