"""A bounded battery of hostile requests against a running Handoff: no answer may be a 5xx, a traceback or a hang.

Run it against `make run` with `make hostile` (or `python -m tests.support.hostile --ingest URL ...`); the
end-to-end suite runs it against real service processes. Every request has a client timeout, the battery has a
fixed number of requests, and it only ever talks to the URLs it is given (loopback in practice).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

TIMEOUT = httpx.Timeout(15.0)


@dataclass
class Finding:
    """One answer that breaks the promise: a 5xx (503 without Retry-After), a traceback, or no answer in time."""

    name: str
    what: str


@dataclass
class Report:
    statuses: Counter[int] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    sent: int = 0

    def line(self) -> str:
        counts = ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items()))
        return f"{self.sent} hostile requests, {len(self.findings)} findings ({counts})"


@dataclass
class Target:
    ingest: str
    scoring: str
    routing: str
    admin_token: str

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


def _nested(depth: int) -> bytes:
    return b'{"email":"deep@example.com","custom":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


def _billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("rules: *i")
    return "\n".join(lines) + "\n"


def _requests(target: Target, keys: dict[str, str]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(name, method, url, httpx request kwargs) for every hostile request."""
    ingest, scoring, routing = target.ingest, target.scoring, target.routing
    secret = {"Authorization": f"Bearer {keys['api_key']}"}
    browser = {"X-Handoff-Key": keys["publishable_key"], "Origin": "https://www.example.com"}
    evil_origin = {"X-Handoff-Key": keys["publishable_key"], "Origin": "https://evil.example.net"}
    json_ct = {"Content-Type": "application/json"}
    leads = f"{ingest}/v1/leads"

    # Bodies that break parsers.
    for who, headers in (("secret key", secret), ("publishable key", browser)):
        yield f"nested 1,000 deep ({who})", "POST", leads, {"content": _nested(1000), "headers": {**headers, **json_ct}}
        yield (
            f"nested arrays 20,000 deep ({who})",
            "POST",
            leads,
            {
                "content": b"[" * 20_000 + b"]" * 20_000,
                "headers": {**headers, **json_ct},
            },
        )
    yield "invalid UTF-8", "POST", leads, {"content": b'{"email":"\xff\xfe@x.com"}', "headers": {**secret, **json_ct}}
    yield "lone surrogate", "POST", leads, {"content": b'{"email":"a\\ud800@x.com"}', "headers": {**secret, **json_ct}}
    yield (
        "NUL bytes",
        "POST",
        leads,
        {"json": {"email": "nul\x00@example.com", "first_name": "\x00" * 50}, "headers": secret},
    )
    yield (
        "huge integer",
        "POST",
        leads,
        {"content": b'{"email":"n@example.com","custom":{"n":' + b"9" * 5000 + b"}}", "headers": {**secret, **json_ct}},
    )
    yield (
        "NaN and Infinity",
        "POST",
        leads,
        {"content": b'{"email":"n@example.com","custom":{"a":NaN,"b":Infinity}}', "headers": {**secret, **json_ct}},
    )
    yield (
        "duplicate keys",
        "POST",
        leads,
        {"content": b'{"email":"a@example.com","email":"b@example.com"}', "headers": {**secret, **json_ct}},
    )
    for body in (b"[]", b"null", b"42", b'"a string"', b"", b"{", b"{}" * 1000):
        yield f"not an object: {body[:12]!r}", "POST", leads, {"content": body, "headers": {**secret, **json_ct}}
    yield (
        "wrong types everywhere",
        "POST",
        leads,
        {
            "json": {"email": ["a@example.com"], "phone": {"n": 1}, "first_name": 7, "custom": "x", "utm": 3.5},
            "headers": secret,
        },
    )
    yield (
        "60 KiB field",
        "POST",
        leads,
        {"json": {"email": "big@example.com", "message": "x" * 60_000}, "headers": secret},
    )
    yield (
        "10 MiB body",
        "POST",
        leads,
        {"content": b'{"message":"' + b"x" * 10_000_000 + b'"}', "headers": {**secret, **json_ct}},
    )
    yield (
        "unknown content type",
        "POST",
        leads,
        {"content": b"<lead/>", "headers": {**secret, "Content-Type": "application/xml"}},
    )
    yield (
        "broken multipart",
        "POST",
        leads,
        {"content": b"--x\r\nbroken", "headers": {**secret, "Content-Type": "multipart/form-data; boundary=x"}},
    )
    yield (
        "form with 5,000 fields",
        "POST",
        leads,
        {
            "content": "&".join(f"f{i}=v" for i in range(5000)).encode(),
            "headers": {**browser, "Content-Type": "application/x-www-form-urlencoded"},
        },
    )
    yield (
        "RTL override and emoji",
        "POST",
        leads,
        {
            "json": {
                "email": f"rtl-{uuid.uuid4().hex[:8]}@example.com",
                "first_name": "\u202egnp.exe\U0001f600",
                "company": "\u200b" * 100,
            },
            "headers": secret,
        },
    )
    yield (
        "regex bait message",
        "POST",
        leads,
        {
            "json": {
                "email": f"re-{uuid.uuid4().hex[:8]}@example.com",
                "message": "a" * 9000 + "!",
                "job_title": "a " * 3000,
            },
            "headers": secret,
        },
    )

    # Credentials.
    for name, headers in (
        ("no credentials", {}),
        ("empty bearer", {"Authorization": "Bearer"}),
        ("10 KiB bearer", {"Authorization": "Bearer " + "k" * 10_000}),
        ("basic auth", {"Authorization": "Basic YWRtaW46YWRtaW4="}),
        ("publishable key from an unlisted origin", evil_origin),
        ("publishable key with no origin", {"X-Handoff-Key": keys["publishable_key"]}),
        ("spoofed forwarded-for", {"Authorization": "Bearer nope", "X-Forwarded-For": "1.2.3.4, 5.6.7.8"}),
    ):
        yield name, "POST", leads, {"json": {"email": "cred@example.com"}, "headers": headers}
    yield (
        "preflight from an evil origin",
        "OPTIONS",
        leads,
        {"headers": {"Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"}},
    )
    yield (
        "malformed body without credentials (routing)",
        "PUT",
        f"{routing}/v1/routing/rules",
        {
            "content": b"{" * 5000,
            "headers": json_ct,
        },
    )
    yield (
        "malformed body without credentials (scoring)",
        "PUT",
        f"{scoring}/v1/ruleset",
        {
            "content": b"{" * 5000,
            "headers": json_ct,
        },
    )

    # Paths and queries.
    for path in (
        "/v1/leads/..%2F..%2Fetc%2Fpasswd",
        "/v1/leads/%00",
        "/v1/leads/" + "a" * 5000,
        "/v1/leads?since=' OR 1=1 --",
        "/v1/leads?cursor=%FF%FE&limit=-1",
        "/v1/leads?limit=1000000000000",
        "/v1/sources/not-a-uuid",
    ):
        yield f"ingest GET {path[:40]}", "GET", f"{ingest}{path}", {"headers": target.admin}
    for path in (
        "/v1/leads/'; DROP TABLE assignments; --",
        "/v1/sla/breaches?since=0001-01-01T00:00:00Z",
        "/v1/sla/breaches?since=not-a-date&limit=99999999",
        "/v1/sla/summary?since=1900-01-01T00:00:00Z&until=9999-12-31T00:00:00Z",
        "/v1/reps/" + "%F0%9F" * 100,
    ):
        yield f"routing GET {path[:40]}", "GET", f"{routing}{path}", {"headers": target.admin}
    yield "scoring GET odd id", "GET", f"{scoring}/v1/scores/%2e%2e%2f", {"headers": target.admin}
    for method in ("PUT", "DELETE", "PATCH", "TRACE"):
        yield f"{method} on /v1/leads", method, leads, {"headers": secret}

    # Platform webhooks.
    linkedin = f"{ingest}/v1/sources/{keys['linkedin_source']}/webhook"
    for code in ("hello", "x" * 5000, "", "00000000-0000-0000-0000-00000000000g"):
        yield f"LinkedIn challenge {code[:12]!r}", "GET", f"{linkedin}?challengeCode={code}", {}
    yield (
        "LinkedIn notification, bad signature",
        "POST",
        linkedin,
        {
            "json": {
                "type": "LEAD_ACTION",
                "leadAction": "DELETED",
                "leadGenFormResponse": "urn:li:leadGenFormResponse:1",
            },
            "headers": {"X-LI-Signature": "0" * 64},
        },
    )
    yield (
        "LinkedIn notification nested deep",
        "POST",
        linkedin,
        {
            "content": _nested(2000),
            "headers": {**json_ct, "X-LI-Signature": "0" * 64},
        },
    )
    yield "webhook on a missing source", "POST", f"{ingest}/v1/sources/{uuid.uuid4()}/webhook", {"json": {}}

    # Rules and rulesets that attack the engines.
    bomb_rules = "rules:\n  - id: bomb\n    when: {field: message, regex: '^(\\w+\\s?)*$'}\n    action: {team: t}\n"
    for name, body in (
        ("billion laughs", _billion_laughs()),
        ("catastrophic regex", bomb_rules),
        ("lookahead regex", bomb_rules.replace("^(\\w+\\s?)*$", "(?=a)a")),
        ("YAML python tag", "!!python/object/apply:os.system ['true']\n"),
        ("deep YAML", "rules: " + "[" * 3000 + "]" * 3000 + "\n"),
    ):
        yield (
            f"routing rules: {name}",
            "PUT",
            f"{routing}/v1/routing/rules",
            {
                "content": body.encode(),
                "headers": {**target.admin, "Content-Type": "application/yaml"},
            },
        )
        yield (
            f"scoring ruleset: {name}",
            "PUT",
            f"{scoring}/v1/ruleset",
            {
                "content": body.encode(),
                "headers": {**target.admin, "Content-Type": "application/yaml"},
            },
        )
    yield (
        "simulate nested deep",
        "POST",
        f"{routing}/v1/routing/simulate",
        {
            "content": _nested(1000),
            "headers": {**target.admin, **json_ct},
        },
    )
    yield (
        "preview with a crafted message",
        "POST",
        f"{scoring}/v1/score/preview",
        {
            "json": {"lead": {"email": "p@example.com", "message": "a" * 10_000 + "!"}},
            "headers": target.admin,
        },
    )
    yield (
        "action on an unknown lead",
        "POST",
        f"{routing}/v1/leads/{uuid.uuid4()}/actions",
        {
            "json": {"action": "touch", "rep_id": "' OR 1=1"},
            "headers": target.admin,
        },
    )
    yield (
        "webhook endpoint to the metadata address",
        "POST",
        f"{routing}/v1/webhook-endpoints",
        {
            "json": {"url": "http://169.254.169.254/latest/meta-data", "event_types": ["lead.assigned"]},
            "headers": target.admin,
        },
    )
    yield (
        "source whose base URL is the metadata address",
        "POST",
        f"{ingest}/v1/sources",
        {
            "json": {
                "kind": "meta",
                "name": "evil",
                "config": {
                    "graph_base_url": "http://169.254.169.254",
                    "app_secret": "s",
                    "access_token": "t",
                    "verify_token": "v",
                },
            },
            "headers": target.admin,
        },
    )


def _setup(client: httpx.Client, target: Target) -> dict[str, str]:
    """A web source (with both keys) and a LinkedIn source to aim at; created through the admin API."""
    web = client.post(
        f"{target.ingest}/v1/sources",
        json={"kind": "web", "name": f"hostile-{uuid.uuid4().hex[:6]}", "allowed_origins": ["https://www.example.com"]},
        headers=target.admin,
    )
    web.raise_for_status()
    linkedin = client.post(
        f"{target.ingest}/v1/sources",
        json={
            "kind": "linkedin",
            "name": f"hostile-li-{uuid.uuid4().hex[:6]}",
            "config": {"client_secret": uuid.uuid4().hex},
        },
        headers=target.admin,
    )
    linkedin.raise_for_status()
    return {
        "api_key": web.json()["api_key"],
        "publishable_key": web.json()["publishable_key"],
        "linkedin_source": linkedin.json()["id"],
    }


def _half_open_connection(url: str) -> socket.socket:
    """A client that sends half a request and goes quiet (slowloris): the server must keep answering others."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=5)
    sock.sendall(b'POST /v1/leads HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"email":')
    return sock


def run(target: Target) -> Report:
    """Sends every hostile request once, then checks each service still answers /readyz."""
    report = Report()
    with httpx.Client(timeout=TIMEOUT) as client:
        keys = _setup(client, target)
        stalled = [_half_open_connection(target.ingest) for _ in range(5)]
        try:
            for name, method, url, kwargs in _requests(target, keys):
                report.sent += 1
                try:
                    response = client.request(method, url, **kwargs)
                except httpx.TimeoutException:
                    report.findings.append(Finding(name, "no answer within 15 s"))
                    continue
                except httpx.TransportError as exc:
                    report.findings.append(Finding(name, f"connection failed: {type(exc).__name__}"))
                    continue
                report.statuses[response.status_code] += 1
                body = response.text
                if response.status_code >= 500 and not (
                    response.status_code == 503 and "retry-after" in response.headers
                ):
                    report.findings.append(Finding(name, f"{response.status_code}: {body[:200]}"))
                if "Traceback" in body or 'File "' in body:
                    report.findings.append(Finding(name, "a stack trace in the answer"))
                if response.status_code < 300 and name.startswith("LinkedIn challenge"):
                    report.findings.append(Finding(name, f"signed an arbitrary challenge: {body[:80]}"))
        finally:
            for sock in stalled:
                sock.close()
        for service, url in (("ingest", target.ingest), ("scoring", target.scoring), ("routing", target.routing)):
            try:
                ready = client.get(f"{url}/readyz")
                if ready.status_code != 200:
                    report.findings.append(Finding(f"{service} after the battery", f"/readyz {ready.status_code}"))
            except httpx.HTTPError as exc:
                report.findings.append(Finding(f"{service} after the battery", f"no answer: {type(exc).__name__}"))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ingest", default="http://127.0.0.1:8001")
    parser.add_argument("--scoring", default="http://127.0.0.1:8002")
    parser.add_argument("--routing", default="http://127.0.0.1:8003")
    parser.add_argument("--admin-token", default=os.environ.get("HANDOFF_ADMIN_TOKEN", ""))
    args = parser.parse_args()
    token = args.admin_token
    if not token:
        sys.path.insert(0, "services")
        from common.settings import DEV_ADMIN_TOKEN

        token = DEV_ADMIN_TOKEN
    report = run(Target(args.ingest, args.scoring, args.routing, token))
    print(report.line())
    for finding in report.findings:
        print(f"  FINDING {finding.name}: {finding.what}")
    print(json.dumps(dict(report.statuses)))
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
