"""The firmographics table: company facts keyed by web domain, loaded from an operator-maintained CSV."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

from common.companies import domain_chain, normalize_domain

FIRMOGRAPHICS_COLUMNS: tuple[str, ...] = (
    "domain",
    "name",
    "employee_band",
    "industry",
    "country",
    "revenue_band",
)

# Rules match bands as exact strings, so the table may only use this vocabulary; a typo such as
# "51 - 200" would otherwise silently never match any rule.
EMPLOYEE_BANDS: tuple[str, ...] = (
    "1-10",
    "11-50",
    "51-200",
    "201-500",
    "501-1000",
    "1001-5000",
    "5001-10000",
    "10001+",
)

_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Firmographic:
    """What we know about one company, from the firmographics table."""

    domain: str
    name: str | None = None
    employee_band: str | None = None
    industry: str | None = None
    country: str | None = None
    revenue_band: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        """Plain dict, for events and storage."""
        return {column: getattr(self, column) for column in FIRMOGRAPHICS_COLUMNS}


class FirmographicsError(ValueError):
    """The CSV is malformed; `errors` holds (line number, problem) pairs."""

    def __init__(self, errors: list[tuple[int | None, str]]) -> None:
        self.errors = errors
        super().__init__("\n".join(_format(line, problem) for line, problem in errors))


def _format(line: int | None, problem: str) -> str:
    return f"line {line}: {problem}" if line is not None else problem


def is_valid_domain(domain: str) -> bool:
    """True if `domain` looks like a registrable host name (ASCII or punycode)."""
    return bool(_DOMAIN_RE.match(domain))


def domain_candidates(domain: str | None) -> list[str]:
    """The domain and its parents down to the registrable domain, longest first ("acme.co.uk" for
    "mail.eu.acme.co.uk", never the public suffix "co.uk"): the first (longest) one in the table wins."""
    return domain_chain(domain)


def parse_firmographics_csv(text: str) -> list[Firmographic]:
    """Parse the firmographics CSV; raise FirmographicsError naming every bad line."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    errors: list[tuple[int | None, str]] = []
    header = next(reader, None)
    if header is None:
        raise FirmographicsError([(None, "empty file, expected header: " + ",".join(FIRMOGRAPHICS_COLUMNS))])
    columns = [cell.strip().lower() for cell in header]
    if tuple(columns) != FIRMOGRAPHICS_COLUMNS:
        raise FirmographicsError(
            [(1, f"header is {','.join(columns)!r}, expected {','.join(FIRMOGRAPHICS_COLUMNS)!r}")]
        )
    rows: list[Firmographic] = []
    first_seen: dict[str, int] = {}
    while True:
        start_line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append((start_line, f"malformed CSV: {exc}"))
            break
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(FIRMOGRAPHICS_COLUMNS):
            errors.append((start_line, f"expected {len(FIRMOGRAPHICS_COLUMNS)} columns, found {len(cells)}"))
            continue
        values = [cell.strip() or None for cell in cells]
        domain = normalize_domain(values[0])
        if domain is None:
            errors.append((start_line, "domain is empty"))
            continue
        if not is_valid_domain(domain):
            errors.append((start_line, f"invalid domain {values[0]!r}"))
            continue
        if domain in first_seen:
            errors.append((start_line, f"duplicate domain {domain!r} (first on line {first_seen[domain]})"))
            continue
        employee_band = values[2]
        if employee_band is not None and employee_band not in EMPLOYEE_BANDS:
            errors.append(
                (
                    start_line,
                    f"unknown employee_band {employee_band!r}, expected one of {', '.join(EMPLOYEE_BANDS)}",
                )
            )
            continue
        country = values[4].upper() if values[4] else None
        if country is not None and not re.fullmatch(r"[A-Z]{2}", country):
            errors.append((start_line, f"country {values[4]!r} is not an ISO 3166 alpha-2 code"))
            continue
        first_seen[domain] = start_line
        rows.append(
            Firmographic(
                domain=domain,
                name=values[1],
                employee_band=employee_band,
                industry=values[3],
                country=country,
                revenue_band=values[5],
            )
        )
    if errors:
        raise FirmographicsError(errors)
    return rows
