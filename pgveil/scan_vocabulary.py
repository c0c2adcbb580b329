"""Column names that point to personal data, per kind, in English, German, French,
Spanish and Russian (Cyrillic and the usual Latin transliterations).

A name is split into words (``customerEmail`` → customer, email; ``E-Mail-Adresse``
→ e, mail, adresse) and each pattern must match whole words. A *strong* hint
is enough on its own for kinds the scan cannot check by value (a passport
number, a password); a *weak* hint (``name`` alone: a product has a name too)
only lowers the share of matching values the scan asks for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# kind → locale → patterns over the name's words joined by "_".
STRONG: dict[str, dict[str, tuple[str, ...]]] = {
    "email": {
        "en": (r"e_?mail(_?addr(ess)?)?", r"mail_?address", r"email\d*"),
        "de": (r"e_?mail_?adresse", r"mailadresse"),
        "fr": (r"courriel", r"adresse_?(e_?)?mail", r"m[eé]l"),
        "es": (r"correo(_?electr[oó]nico)?", r"correo_?e"),
        "ru": (r"(эл_?)?почта", r"e_?mail", r"(elektronnaya_)?pochta", r"емейл"),
    },
    "phone": {
        "en": (
            r"(tele)?phone(_?(number|no|num|nr))?",
            r"tel(_?no)?",
            r"mobile(_?(number|phone))?",
            r"cell(_?phone)?",
            r"fax",
            r"msisdn",
        ),
        "de": (r"telefon(nummer)?", r"handy(nummer)?", r"mobil(nummer|telefon)?", r"rufnummer", r"tel_?nr"),
        "fr": (r"t[eé]l[eé]phone", r"portable", r"num[eé]ro_?de_?t[eé]l[eé]phone"),
        "es": (r"tel[eé]fono", r"m[oó]vil", r"celular"),
        "ru": (r"телефон", r"тел", r"мобильный", r"telefon", r"mobilnyy?"),
    },
    "ip_address": {
        "en": (r"ip(_?addr(ess)?)?", r"ipv[46]", r"(client|remote|source|last_?login)_?ip", r"remote_?addr"),
        "de": (r"ip_?adresse",),
        "fr": (r"adresse_?ip",),
        "es": (r"direcci[oó]n_?ip",),
        "ru": (r"ip_?адрес",),
    },
    "person_name": {
        "en": (
            r"(first|last|full|middle|given|family|maiden|sur|fore|nick|display|legal|contact|customer|person|holder|"
            r"card_?holder|account_?holder|patient|employee|recipient|sender)_?name",
            r"surname",
            r"fname",
            r"lname",
            r"cardholder",
        ),
        "de": (r"vorname", r"nachname", r"familienname", r"geburtsname", r"rufname"),
        "fr": (r"pr[eé]nom", r"nom_?de_?famille", r"nom_?complet", r"nom_?de_?naissance"),
        "es": (r"nombre(_?completo)?", r"apellidos?", r"nombre_?y_?apellidos?"),
        "ru": (r"имя", r"фамилия", r"отчество", r"фио", r"imya", r"familiya", r"otchestvo", r"fio"),
    },
    "postal_address": {
        "en": (
            r"(street|home|mailing|billing|shipping|postal|residential|delivery)?_?address(_?line)?_?\d?",
            r"addr(_?line)?_?\d?",
            r"street(_?address)?",
        ),
        "de": (r"adresse", r"anschrift", r"stra(ss|ß)e", r"wohnort", r"wohnadresse"),
        "fr": (r"adresse(_?postale)?", r"rue", r"domicile"),
        "es": (r"direcci[oó]n", r"domicilio", r"calle"),
        "ru": (r"адрес", r"улица", r"adres", r"ulitsa"),
    },
    "birth_date": {
        "en": (r"(date_?of_?)?birth(_?date|day)?", r"dob", r"born(_?on)?", r"birthday"),
        "de": (r"geburt(s_?datum|stag|sdatum)?", r"geb_?datum"),
        "fr": (r"(date_?de_?)?naissance",),
        "es": (r"(fecha_?de_?)?nacimiento", r"fecha_?nac"),
        "ru": (r"дата_?рождения", r"рождени[ея]", r"data_?rozhdeniya", r"rozhdeniya", r"dr"),
    },
    "payment_card": {
        "en": (r"(credit_?|debit_?|payment_?)?card(_?(number|no|num|nr|pan))?", r"cc_?(number|no|num)?", r"pan"),
        "de": (r"kartennummer", r"kreditkarte(nnummer)?"),
        "fr": (r"num[eé]ro_?de_?carte", r"carte(_?bancaire|_?de_?cr[eé]dit)?"),
        "es": (r"(n[uú]mero_?de_?)?tarjeta(_?de_?cr[eé]dito)?",),
        "ru": (r"номер_?карты", r"карта", r"karta", r"nomer_?karty"),
    },
    "iban": {
        "en": (r"iban", r"bank_?account(_?number)?", r"account_?number"),
        "de": (r"kontonummer", r"bankverbindung"),
        "fr": (r"rib", r"num[eé]ro_?de_?compte"),
        "es": (r"(n[uú]mero_?de_?)?cuenta(_?bancaria)?",),
        "ru": (r"сч[её]т", r"расч[её]тный_?сч[её]т", r"schet"),
    },
    "national_id": {
        "en": (
            r"ssn",
            r"social_?security(_?number)?",
            r"national_?id(_?number)?",
            r"tax_?id",
            r"tin",
            r"nino",
            r"passport(_?(number|no|num))?",
            r"id_?card(_?number)?",
            r"driver_?licen[cs]e(_?number)?",
        ),
        "de": (
            r"personalausweis(nummer)?",
            r"steuer_?id",
            r"steuernummer",
            r"sozialversicherungs_?nummer",
            r"reisepass",
        ),
        "fr": (r"nir", r"insee", r"num[eé]ro_?de_?s[eé]curit[eé]_?sociale", r"passeport"),
        "es": (r"dni", r"nie", r"nif", r"pasaporte"),
        "ru": (r"снилс", r"инн", r"паспорт", r"snils", r"inn", r"pasport"),
    },
    "secret": {
        "en": (r"password(_?hash)?", r"passwd", r"pwd", r"pass_?hash", r"secret", r"api_?key", r"security_?answer"),
        "de": (r"passwort", r"kennwort"),
        "fr": (r"mot_?de_?passe", r"mdp"),
        "es": (r"contrase[nñ]a", r"clave"),
        "ru": (r"пароль", r"parol"),
    },
}

WEAK: dict[str, dict[str, tuple[str, ...]]] = {
    "person_name": {"en": (r"name", r"full_?name"), "de": (r"name",), "fr": (r"nom",), "ru": (r"name",)},
    "postal_address": {"en": (r"location",), "es": (r"ubicaci[oó]n",)},
}

# Names that contain a hint's word but mean something else.
NOT_PERSONAL = re.compile(
    r"(?:^|_)(?:mac|wallet|server|host|web|url|contract|node|memory|base|return|reply_?to|bitcoin|eth)_?address(?:_|$)"
    r"|(?:^|_)(?:file|host|domain|table|schema|column|product|company|brand|app|server|class|display_?template)_?name(?:_|$)"
)

LOCALES = ("en", "de", "fr", "es", "ru")


@dataclass(frozen=True)
class NameHint:
    """What a column name suggests: a kind, how strongly, and which locale's word."""

    kind: str
    strong: bool
    locale: str
    pattern: str


def words(name: str) -> str:
    """The name's words, lower case, joined by "_" (camelCase and punctuation split)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return "_".join(w for w in re.split(r"[^\w]+|_", spaced.lower()) if w)


def _compiled(table: dict[str, dict[str, tuple[str, ...]]], strong: bool) -> list[tuple[re.Pattern[str], NameHint]]:
    return [
        (re.compile(rf"(?:^|_)(?:{pattern})(?:_|$)"), NameHint(kind, strong, locale, pattern))
        for kind, by_locale in table.items()
        for locale, patterns in by_locale.items()
        for pattern in patterns
    ]


_STRONG = _compiled(STRONG, strong=True)
_WEAK_WHOLE = [  # weak hints match the whole name only ("name", not "product_name")
    (re.compile(rf"^(?:{hint.pattern})$"), hint) for _, hint in _compiled(WEAK, strong=False)
]


def hint_for(name: str) -> NameHint | None:
    """The kind a column (or JSON key) name suggests, strong hints first, or None."""
    normalized = words(name)
    if NOT_PERSONAL.search(normalized):
        return None
    for pattern, hint in _STRONG:
        if pattern.search(normalized):
            return hint
    for pattern, hint in _WEAK_WHOLE:
        if pattern.search(normalized):
            return hint
    return None
