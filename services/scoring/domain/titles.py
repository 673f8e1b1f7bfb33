"""Job title -> (seniority, function), for English and the common European and East Asian languages.

Keyword rules, checked in order, first match wins. Input and patterns are folded the same way (NFKD,
accents dropped, casefold), so "Geschäftsführer", "GESCHÄFTSFÜHRER" and "Geschaeftsfuehrer" all match.
German and Dutch glue words together ("Vertriebsleiter"), so their stems are matched without word
boundaries; short English acronyms ("vp", "it", "hr") need boundaries. CJK has no word boundaries at all.
"""

from __future__ import annotations

import re
import unicodedata

SENIORITIES: tuple[str, ...] = ("c_level", "vp", "director", "manager", "individual")
FUNCTIONS: tuple[str, ...] = (
    "sales",
    "marketing",
    "engineering",
    "product",
    "finance",
    "hr",
    "operations",
    "it",
    "legal",
    "executive",
    "other",
)


def fold(text: str) -> str:
    """Accent-free, case-folded, width-normalised form used for keyword matching."""
    # Kana lose their voicing marks too (ジ -> シ); harmless, as the patterns are folded the same way.
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def _compile(patterns: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fold(p)})" for p in patterns))


# Order matters: the first group that matches decides. Specific phrases come before the generic words
# they contain ("vice president" before "president", "teamleiter" before "leiter").
_SENIORITY_RULES: list[tuple[str, re.Pattern[str]]] = [
    (
        "individual",
        _compile(
            [
                r"\bassistant (to|of)\b",
                r"\b(executive|personal|administrative) assistant\b",
                r"\bassistent(in)?\b",
                r"\bassistente\b",
                r"\b(product|process|business|service|data) owner\b",
                r"\baccount manager\b",
                r"\bintern\b",
                r"\binternship\b",
                r"\bstudent\b",
                r"werkstudent",
                r"\bpraktikant(in)?\b",
                r"\bstagiaire\b",
                r"\bestagiario\b",
                r"\bbecario\b",
                r"\btrainee\b",
                r"\bstagista\b",
                r"\bestudiante\b",
                r"\betudiant(e)?\b",
                r"\bstudente\b",
                r"\bauszubildende(r)?\b",
                r"実習生|インターン|研修生|实习生|学生",
            ]
        ),
    ),
    (
        "vp",
        _compile(
            [
                r"\bvice[- ]?pres",
                r"\bvize ?pras",
                r"\bvicepresident",
                r"\b[sea]?vp\b",
                r"\bv\.p\.",
                r"\bsenior vice\b",
                r"副社長|執行役員|本部長|副总裁|副总经理|副總裁|副總經理",
            ]
        ),
    ),
    (
        "c_level",
        _compile(
            [
                r"\bchief\b",
                r"\b(ceo|cto|cfo|coo|cmo|cio|cro|cpo|cso|cdo|cco|ciso|chro|cxo|caio)\b",
                r"\bco-?founder\b",
                r"\bfounder\b",
                r"\bfundador(a)?\b",
                r"\bfondat(eur|rice|ore)\b",
                r"gr(u|ue)nder(in)?\b",
                r"\boprichter\b",
                r"\bowner\b",
                r"\binhaber(in)?\b",
                r"\bpropietari[oa]\b",
                r"\bproprietaire\b",
                r"\bpresident\b",
                r"\bpresidente\b",
                r"\bpdg\b",
                r"\bmanaging (director|partner)\b",
                r"gesch(a|ae)ftsf(u|ue)hr",
                r"gesch(a|ae)ftsleitung",
                r"\bvorstand",
                r"\bdirect(eur|rice) general(e)?\b",
                r"\bdirector(a)? general\b",
                r"\bdirector(a)? ejecutiv[oa]\b",
                r"\bdirector(a)? gerente\b",
                r"\bdiretor(a)? (geral|executiv[oa]|presidente)\b",
                r"\bdirett(ore|rice) generale\b",
                r"\bamministratore delegato\b",
                r"\balgemeen directeur\b",
                r"\bgerente general\b",
                r"\bgerente geral\b",
                r"\bgerant(e)?\b",
                r"\bgeneral manager\b",
                r"\bproprietor\b",
                r"\bbestuurder\b",
                r"代表取締役|取締役|社長|会長|总裁|總裁|总经理|總經理|董事长|董事長|首席|创始人|創始人|創業者",
            ]
        ),
    ),
    (
        "manager",
        _compile(
            [
                r"teamleiter(in)?",
                r"gruppenleiter(in)?",
                r"projektleiter(in)?",
                r"\bteam ?lead(er)?\b",
                r"teamleider",
                r"\bchef de (projet|produit|service|groupe|rayon)\b",
                r"\bjefe de (proyecto|equipo)\b",
                r"\bresponsable de (proyecto|equipo)\b",
            ]
        ),
    ),
    (
        "director",
        _compile(
            [
                r"\bdirector(a)?\b",
                r"\bdirect(eur|rice)\b",
                r"\bdirektor(in)?\b",
                r"\bdiretor(a)?\b",
                r"\bdirett(ore|rice)\b",
                r"\bhead\b",
                r"leiter(in)?\b",
                r"\bleitung\b",
                r"\bhoofd\b",
                r"\bgeneral counsel\b",
                r"部長|部长|ディレクター|总监|總監",
            ]
        ),
    ),
    (
        "manager",
        _compile(
            [
                r"manager(in)?\b",
                r"\bmgr\b",
                r"\bgerente\b",
                r"\bgestor(a)?\b",
                r"\bresponsable\b",
                r"\bresponsabile\b",
                r"\bjef[ea]\b",
                r"\bencargad[oa]\b",
                r"\bchef\b",
                r"\bsupervisor(a)?\b",
                r"\bcoordinat(or|eur|ore)\b",
                r"\bcoordinador(a)?\b",
                r"\bcoordenador(a)?\b",
                r"\bleidinggevende\b",
                r"\bmanagement\b",
                r"課長|係長|マネージャー|マネジャー|经理|經理|主管|主任",
            ]
        ),
    ),
]

# Checked in order; the first function found wins. Marketing before sales ("Product Marketing"),
# sales before engineering ("Sales Engineer"), the support functions first ("IT Operations").
_FUNCTION_RULES: list[tuple[str, re.Pattern[str]]] = [
    (
        "legal",
        _compile(
            [
                r"\blegal\b",
                r"\bcounsel\b",
                r"\blawyer\b",
                r"\battorney\b",
                r"\bparalegal\b",
                r"\bcompliance\b",
                r"\bjurist",
                r"rechtsabteilung",
                r"rechtsanwalt",
                r"\bjuridi(que|co|sch)\b",
                r"\bavocat\b",
                r"\babogad[oa]\b",
                r"\badvogad[oa]\b",
                r"\bavvocato\b",
                r"\bufficio legale\b",
                r"\bclo\b",
                r"法務|法务|律师|律師|弁護士",
            ]
        ),
    ),
    (
        "finance",
        _compile(
            [
                r"\bfinanc",
                r"\bcfo\b",
                r"\bcontroll(er|ing)\b",
                r"\baccount(ing|ant)\b",
                r"\btreasur",
                r"\bbookkeep",
                r"\bfinanz",
                r"buchhalt",
                r"\bcomptab",
                r"\bcontab",
                r"\btesorer",
                r"\bfinance(s|ira|iro)?\b",
                r"\bboekhoud",
                r"経理|財務|会計|财务|会计|會計",
            ]
        ),
    ),
    (
        "hr",
        _compile(
            [
                r"\bhr\b",
                r"\bhuman resources\b",
                r"\bpeople\b",
                r"\btalent\b",
                r"\brecruit",
                r"\bchro\b",
                r"personalleiter",
                r"personalabteilung",
                r"\bpersonalwesen\b",
                r"\bressources humaines\b",
                r"\brrhh\b",
                r"\brecursos humanos\b",
                r"\brisorse umane\b",
                r"\bpersoneelszaken\b",
                r"\bhrm\b",
                r"\bdrh\b",
                r"人事|人力资源|人力資源|招聘|採用",
            ]
        ),
    ),
    (
        "marketing",
        _compile(
            [
                r"marketing",
                r"\bcmo\b",
                r"\bgrowth\b",
                r"\bbrand",
                r"\bdemand gen",
                r"\bcontent\b",
                r"\bseo\b",
                r"\bsem\b",
                r"\bcommunications?\b",
                r"\bcomms\b",
                r"\bpr\b",
                r"\bmercadotecnia\b",
                r"\bmercadeo\b",
                r"\bkommunikation\b",
                r"\bcommunication\b",
                r"\bcomunicaci[oó]n\b",
                r"\bcomunicacao\b",
                r"\bcomunicazione\b",
                r"マーケティング|マーケ|広報|宣伝|市场|市場|营销|行銷|品牌",
            ]
        ),
    ),
    (
        "sales",
        _compile(
            [
                r"\bsales\b",
                r"\bcro\b",
                r"\bchief revenue\b",
                r"\brevenue\b",
                r"\bbusiness development\b",
                r"\bbiz ?dev\b",
                r"\baccount (executive|manager|director)\b",
                r"\bkey account",
                r"\b[bs]dr\b",
                r"\bae\b",
                r"vertrieb",
                r"verkauf",
                r"\bkundenberater",
                r"\bcommercia(l|le|ux)\b",
                r"\bventes?\b",
                r"\bventas\b",
                r"\bvendas\b",
                r"\bvendite\b",
                r"\bverkoop",
                r"\bvendedor(a)?\b",
                r"\bvenditore\b",
                r"\bvendeur\b",
                r"\bcomercial\b",
                r"\bcommerciale\b",
                r"\bcommercieel\b",
                r"営業|販売|销售|銷售|业务|業務拓展|商务|商務",
            ]
        ),
    ),
    (
        "product",
        _compile(
            [
                r"\bproduct(?!ion)",
                r"\bprodukt(?!ion)",
                r"\bproduit",
                r"\bproducto\b",
                r"\bproduto\b",
                r"\bprodott",
                r"\bcpo\b",
                r"\bux\b",
                r"\bdesign(er)?\b",
                r"プロダクト|製品企画|产品|產品",
            ]
        ),
    ),
    (
        "it",
        _compile(
            [
                r"\bit\b",
                r"\bcio\b",
                r"\bciso\b",
                r"\bchief information\b",
                r"\binformation (technology|security|systems)\b",
                r"\bsys ?admin",
                r"\bsystem(s)? administrat",
                r"\bnetwork\b",
                r"\binfrastructure\b",
                r"\bsecurity\b",
                r"\bhelp ?desk\b",
                r"\bedv\b",
                r"\bict\b",
                r"\binformatique\b",
                r"\binformatica\b",
                r"\bdsi\b",
                r"\bsistemas\b",
                r"\bsistemi informativi\b",
                r"情報システム|情シス|信息技术|資訊|信息|网络安全|網絡",
            ]
        ),
    ),
    (
        "engineering",
        _compile(
            [
                r"\bengineer",
                r"\bcto\b",
                r"\bdevelop(er|ment)\b",
                r"\bsoftware\b",
                r"\bprogramm",
                r"\bdevops\b",
                r"\bsre\b",
                r"\barchitect",
                r"\bdata scien",
                r"\br ?& ?d\b",
                r"\bresearch\b",
                r"entwickl",
                r"ingenieur",
                r"\bingenier[oa]\b",
                r"\bengenheir[oa]\b",
                r"\bingegnere\b",
                r"\bdesarroll",
                r"\bdeveloppeu",
                r"\bsviluppat",
                r"\bontwikkel",
                r"\btechni(k|cal|que|co|sch)\b",
                r"\btecnic[oa]\b",
                r"\btecnologi",
                r"\btechnolog",
                r"エンジニア|開発|技術|研究|开发|開發|工程师|工程師|研发|研發|技术|程序员",
            ]
        ),
    ),
    (
        "operations",
        _compile(
            [
                r"\boperations?\b",
                r"\boperating\b",
                r"\bops\b",
                r"\bcoo\b",
                r"\blogisti",
                r"\bsupply chain\b",
                r"\bprocurement\b",
                r"\bpurchasing\b",
                r"einkauf",
                r"\bbetrieb\b",
                r"\bbetriebsleiter",
                r"\boperati(ons|onnel)\b",
                r"\boperaciones\b",
                r"\boperacoes\b",
                r"\boperazioni\b",
                r"\bachats?\b",
                r"\bcompras\b",
                r"\bacquisti\b",
                r"produktion",
                r"\bproduction\b",
                r"\bproduccion\b",
                r"運用|物流|購買|调度|运营|營運|采购|採購",
            ]
        ),
    ),
    (
        "executive",
        _compile(
            [
                r"\bceo\b",
                r"\bfounder\b",
                r"\bowner\b",
                r"\bpresident\b",
                r"\bmanaging director\b",
                r"\bgeneral manager\b",
                r"gesch(a|ae)ftsf(u|ue)hr",
                r"gesch(a|ae)ftsleitung",
                r"\bvorstand",
                r"\binhaber",
                r"\bpdg\b",
                r"\bgerant(e)?\b",
                r"\bdirect(eur|rice) general",
                r"\bdirector(a)? general\b",
                r"\bgerente general\b",
                r"\bgerente geral\b",
                r"\bdiretor(a)? geral\b",
                r"\bamministratore delegato\b",
                r"\balgemeen directeur\b",
                r"社長|代表取締役|会長|总裁|總裁|总经理|總經理|董事长|董事長|创始人",
            ]
        ),
    ),
]


def parse_title(title: str | None) -> tuple[str | None, str | None]:
    """(seniority, function) of a job title; (None, None) when there is no title."""
    if title is None or not title.strip():
        return None, None
    text = fold(title)
    text = re.sub(r"[\s/,;|()\[\]_]+", " ", text).strip()
    seniority = next((level for level, pattern in _SENIORITY_RULES if pattern.search(text)), "individual")
    function = next((name for name, pattern in _FUNCTION_RULES if pattern.search(text)), None)
    if function is None:
        function = "executive" if seniority == "c_level" else "other"
    return seniority, function
