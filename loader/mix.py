"""What the loader does: kinds of application events and their mix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str
    writes: int  # rows one event inserts, updates or deletes (cascades not counted)
    needs_customer: bool  # acts on an existing customer
    help: str


KINDS = {
    k.name: k
    for k in (
        Kind("insert_customer", 2, False, "a new customer with a new address"),
        Kind("insert_payment", 1, True, "a payment by an existing customer"),
        Kind("update_email", 1, True, "a customer changes their email"),
        Kind("update_name", 1, True, "a customer changes their name"),
        Kind("update_active", 1, True, "a customer is (de)activated"),
        Kind("change_key", 1, True, "a customer gets a new customer_id (payments follow by ON UPDATE CASCADE)"),
        Kind("delete_customer", 2, True, "an erasure request: the customer and their address (payments cascade)"),
    )
}

DEFAULT_MIX = (
    "insert_customer=15,insert_payment=40,update_email=10,update_name=5,update_active=20,change_key=2,delete_customer=8"
)


class MixError(ValueError):
    pass


def parse_mix(text: str) -> dict[str, float]:
    """'kind=weight,…' → {kind: share}, shares summing to 1; kinds left out do not happen."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep:
            raise MixError(f"{part!r} is not kind=weight (kinds: {', '.join(KINDS)})")
        if name not in KINDS:
            raise MixError(f"unknown kind {name!r} (kinds: {', '.join(KINDS)})")
        if name in weights:
            raise MixError(f"kind {name!r} is given twice")
        try:
            weight = float(value)
        except ValueError:
            raise MixError(f"weight of {name!r} must be a number, got {value.strip()!r}") from None
        if not weight >= 0 or weight == float("inf"):
            raise MixError(f"weight of {name!r} must be a finite number >= 0, got {value.strip()!r}")
        weights[name] = weight
    total = sum(weights.values())
    if total <= 0:
        raise MixError("the mix needs at least one kind with a weight > 0")
    return {name: weight / total for name, weight in weights.items() if weight > 0}
