"""The rule the scan proposes for a column of a kind, under a policy's delivery.

A ``views`` policy gets unkeyed functions (masked roles could compute a keyed
pseudonym of any value they guess); ``copy`` and ``static`` policies get keyed
pseudonyms; a static policy's unique columns get injective rules, which its
unique-safe check demands. A user's ``--rule KIND=...`` comes first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pgveil.pg_anon_dicts import quote_ident, quote_literal
from pgveil.scan_vocabulary import words

# Type families: which types are read (and as what), which kinds a type can hold.
TEXT_TYPES = {"text", "character varying", "character", "bpchar", "citext", "name", "varchar"}
NUMBER_TYPES = {"bigint", "numeric"}
DATE_TYPES = {"date", "timestamp without time zone", "timestamp with time zone"}
NETWORK_TYPES = {"inet", "cidr"}
JSON_TYPES = {"json", "jsonb"}
KIND_TYPES = {
    "email": TEXT_TYPES,
    "person_name": TEXT_TYPES,
    "postal_address": TEXT_TYPES,
    "phone": TEXT_TYPES | NUMBER_TYPES,
    "payment_card": TEXT_TYPES | NUMBER_TYPES,
    "iban": TEXT_TYPES,
    "national_id": TEXT_TYPES | NUMBER_TYPES,
    "ip_address": TEXT_TYPES | NETWORK_TYPES,
    "birth_date": TEXT_TYPES | DATE_TYPES,
    "secret": TEXT_TYPES | {"bytea"},
}
SAMPLED_TYPES = TEXT_TYPES | NUMBER_TYPES | DATE_TYPES | NETWORK_TYPES | JSON_TYPES


@dataclass(frozen=True)
class Column:
    """A column as the scan sees it."""

    attnum: int
    name: str
    type: str  # format_type, with modifiers
    base: str  # the type without modifiers
    nullable: bool
    unique: bool  # under a unique index or constraint


class RuleProposer:
    """Rules for one policy's delivery, with the user's overrides (kind → rule)."""

    def __init__(self, delivery: str, overrides: dict[str, str]) -> None:
        self.delivery = delivery
        self.overrides = overrides

    def rule(self, kind: str, column: Column) -> str:
        """The label proposed for a column of this kind under the policy's delivery."""
        col = quote_ident(column.name)
        if kind in self.overrides:
            return label(self.overrides[kind], col)
        keyed = self.delivery != "views"
        static = self.delivery == "static"
        text = column.base in TEXT_TYPES
        if not text:
            if kind == "birth_date" and column.base in DATE_TYPES:
                return f"MASKED WITH FUNCTION veil.dnoise({col}, interval '1 year')"
            if static and column.unique:
                return (
                    f"MASKED WITH FUNCTION veil.token({col}, 'scan')"
                    if column.base not in NUMBER_TYPES
                    else f"MASKED WITH FUNCTION veil.unique_int({col})"
                )
            return self.fallback(column)
        unique = static and column.unique
        if kind == "email":
            if unique:
                return f"MASKED WITH FUNCTION veil.unique_email({col})"
            return f"MASKED WITH FUNCTION veil.{'pseudo_email' if keyed else 'partial_email'}({col})"
        if kind == "phone":
            if unique:
                return f"MASKED WITH FUNCTION veil.unique_phone({col})"
            return (
                f"MASKED WITH FUNCTION veil.pseudo_phone({col})"
                if keyed
                else f"MASKED WITH FUNCTION veil.partial({col}, 2, '******', 2)"
            )
        if kind == "person_name":
            if unique:
                return f"MASKED WITH FUNCTION veil.unique_name({col})"
            part = _name_part(column.name)
            if part is not None:
                return f"MASKED WITH FUNCTION veil.{'pseudo' if keyed else 'fake'}_{part}({col if keyed else ''})"
            if keyed:
                return f"MASKED WITH FUNCTION concat(veil.pseudo_first_name({col}), ' ', veil.pseudo_last_name({col}))"
            return "MASKED WITH FUNCTION concat(veil.fake_first_name(), ' ', veil.fake_last_name())"
        if unique:
            return f"MASKED WITH FUNCTION veil.token({col}, 'scan')"
        if kind == "iban":
            return f"MASKED WITH FUNCTION veil.pseudo_iban({col})" if keyed else "MASKED WITH FUNCTION veil.fake_iban()"
        if kind == "postal_address":
            return (
                f"MASKED WITH FUNCTION veil.pseudo_address({col})"
                if keyed
                else "MASKED WITH FUNCTION veil.fake_address()"
            )
        if kind == "payment_card":
            return f"MASKED WITH FUNCTION veil.partial({col}, 0, 'XXXX-XXXX-XXXX-', 4)"
        if kind == "ip_address":
            return "MASKED WITH VALUE '192.0.2.1'"
        if kind == "secret":
            return self.fallback(column)
        # national_id, birth_date as text, free_text, custom: letters and digits hidden.
        return f"MASKED WITH FUNCTION veil.redact({col})"

    def fallback(self, column: Column) -> str:
        if column.nullable:
            return "MASKED WITH VALUE NULL"
        col = quote_ident(column.name)
        if column.base in TEXT_TYPES:
            return f"MASKED WITH FUNCTION veil.redact({col})"
        if column.base in NUMBER_TYPES:
            return "MASKED WITH VALUE 0"
        if column.base in DATE_TYPES:
            return "MASKED WITH VALUE '1900-01-01'"
        if column.base in NETWORK_TYPES:
            return "MASKED WITH VALUE '192.0.2.1'"
        return (
            f"MASKED WITH FUNCTION veil.token({col}, 'scan')" if self.delivery != "views" else "MASKED WITH VALUE NULL"
        )

    def json_rule(self, column: Column, paths: Sequence[tuple[str, str]]) -> str:
        if "json" in self.overrides:
            return label(self.overrides["json"], quote_ident(column.name))
        masks = {path: JSON_MASKS.get(kind, {"value": None}) for path, kind in paths}
        spec = quote_literal(json.dumps({"paths": masks}, sort_keys=True))
        function = "jsonb_mask" if column.base == "jsonb" else "json_mask"
        return f"MASKED WITH FUNCTION veil.{function}({quote_ident(column.name)}, {spec}::jsonb)"


JSON_MASKS: dict[str, Any] = {
    "email": "partial_email",
    "phone": {"partial": [2, "******", 2]},
    "payment_card": {"partial": [0, "XXXX-XXXX-XXXX-", 4]},
    "iban": {"fake": "iban"},
    "postal_address": {"fake": "address"},
    "person_name": {"fake": "last_name"},
    "ip_address": {"value": "192.0.2.1"},
    "national_id": {"partial": [0, "***", 0]},
    "birth_date": "null",
    "secret": "null",
}


FIRST_NAME_WORDS = re.compile(r"(?:^|_)(?:first|given|fore|f|vor|pr[eé]|nombre|имя|imya)_?(?:name|nom)?(?:_|$)")
LAST_NAME_WORDS = re.compile(
    r"(?:^|_)(?:last|sur|family|maiden|l|nach|familien|apellidos?|фамилия|familiya)_?(?:name|nom)?(?:_|$)"
    r"|(?:^|_)nom_?de_?famille(?:_|$)"
)


def _name_part(column: str) -> str | None:
    """first_name or last_name when the column's name says which part of a name it holds."""
    normalized = words(column)
    if FIRST_NAME_WORDS.search(normalized) and not normalized.startswith("nombre_completo"):
        return "first_name"
    if LAST_NAME_WORDS.search(normalized):
        return "last_name"
    return None


def label(template: str, column: str) -> str:
    """A configured rule: a whole label, or a function call; %s is the column."""
    filled = template.replace("%s", column)
    upper = filled.lstrip().upper()
    return filled if upper.startswith(("MASKED ", "NOT MASKED")) else f"MASKED WITH FUNCTION {filled}"
