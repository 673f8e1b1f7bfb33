"""Territories: ISO 3166-1 countries, "CC-SS" subdivisions and named sales regions."""

from __future__ import annotations


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


_AMER = _codes(
    "AG AI AR AW BB BL BM BO BQ BR BS BV BZ CA CL CO CR CU CW DM DO EC FK GD GF GL GP GS GT GY HN HT JM KN "
    "KY LC MF MQ MS MX NI PA PE PM PR PY SR SV SX TC TT UM US UY VC VE VG VI"
)
_EUROPE = _codes(
    "AD AL AM AT AX AZ BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GE GG GI GR HR HU IE IM IS IT JE LI LT "
    "LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK"
)
_MIDDLE_EAST = _codes("AE BH IL IQ IR JO KW LB OM PS QA SA SY TR YE")
_AFRICA = _codes(
    "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY MA MG ML MR MU MW "
    "MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TF TG TN TZ UG YT ZA ZM ZW"
)
_APAC = _codes(
    "AF AQ AS AU BD BN BT CC CK CN CX FJ FM GU HK HM ID IN IO JP KG KH KI KP KR KZ LA LK MH MM MN MO MP MV "
    "MY NC NF NP NR NU NZ PF PG PH PK PN PW SB SG TH TJ TK TL TM TO TV TW UZ VN VU WF WS"
)
_EU = _codes("AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK")

# "NA" is Namibia, so North America is spelled NORAM.
REGIONS: dict[str, frozenset[str]] = {
    "AMER": _AMER,
    "NORAM": frozenset({"US", "CA"}),
    "LATAM": _AMER - {"US", "CA", "GL", "PM", "BM", "UM", "BV", "GS"},
    "EMEA": _EUROPE | _MIDDLE_EAST | _AFRICA,
    "EUROPE": _EUROPE,
    "EU": _EU,
    "MEA": _MIDDLE_EAST | _AFRICA,
    "MENA": _MIDDLE_EAST | {"DZ", "EG", "LY", "MA", "TN", "EH"},
    "AFRICA": _AFRICA,
    "DACH": frozenset({"DE", "AT", "CH"}),
    "NORDICS": frozenset({"DK", "FI", "IS", "NO", "SE", "FO", "AX"}),
    "BENELUX": frozenset({"BE", "NL", "LU"}),
    "UKI": frozenset({"GB", "IE", "IM", "JE", "GG"}),
    "APAC": _APAC,
    "ANZ": frozenset({"AU", "NZ"}),
}

COUNTRIES: frozenset[str] = _AMER | _EUROPE | _MIDDLE_EAST | _AFRICA | _APAC

# Codes people type that are not ISO 3166-1 alpha-2, with what they almost always mean.
_COMMON_MISTAKES = {
    "UK": "GB",
    "EN": "GB",
    "USA": "US",
    "NA": "NORAM (NA is Namibia)",
    "LA": "LATAM (LA is Laos)",
}


def territory_problem(code: str) -> str | None:
    """Why `code` is not a known territory (with a hint), or None when it is fine."""
    upper = code.strip().upper()
    if upper in REGIONS or upper in COUNTRIES:
        return None
    country, dash, subdivision = upper.partition("-")
    if dash and country in COUNTRIES and 1 <= len(subdivision) <= 3 and subdivision.isalnum():
        return None
    hint = _COMMON_MISTAKES.get(upper)
    suffix = f" (did you mean {hint}?)" if hint else ""
    return f"unknown territory {code!r}{suffix}"


def covers(territories: frozenset[str], country: str | None, region: str | None) -> bool:
    """Whether any territory covers a lead in `country` (ISO alpha-2) and `region` (subdivision)."""
    if not country:
        return False
    country = country.strip().upper()
    subdivision = (region or "").strip().upper()
    if subdivision.startswith(country + "-"):
        subdivision = subdivision[len(country) + 1 :]
    for territory in territories:
        if territory == country or country in REGIONS.get(territory, ()):
            return True
        t_country, dash, t_sub = territory.partition("-")
        if dash and t_country == country and t_sub == subdivision:
            return True
    return False
