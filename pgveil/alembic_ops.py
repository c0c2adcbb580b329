"""Alembic operations for declaring pgveil policy in migrations.

Importing this module registers them, after which a revision can write::

    op.security_label("mask", "COLUMN", "public.customer.email",
                      "MASKED WITH FUNCTION veil.partial_email(email)")
    op.rotate_key()

Like Alembic's own operations they are reversible: an operation carries the
state it replaces (``previous_label``), and ``reverse()`` gives the operation
that restores it, so a downgrade is ``op.invoke(SecurityLabelOp(...).reverse())``
or simply the same call with the labels swapped.
"""

from __future__ import annotations

from alembic.operations import MigrateOperation, Operations
from sqlalchemy import text


@Operations.register_operation("security_label")
class SecurityLabelOp(MigrateOperation):
    """Set (or, with ``label=None``, remove) one rule of a policy."""

    def __init__(self, policy: str, object_type: str, object_name: str, label: str | None,
                 previous_label: str | None = None) -> None:
        self.policy = policy
        self.object_type = object_type
        self.object_name = object_name
        self.label = label
        self.previous_label = previous_label

    @classmethod
    def security_label(cls, operations: Operations, policy: str, object_type: str, object_name: str,
                       label: str | None, *, previous_label: str | None = None) -> None:
        operations.invoke(cls(policy, object_type, object_name, label, previous_label))

    def reverse(self) -> SecurityLabelOp:
        return SecurityLabelOp(self.policy, self.object_type, self.object_name,
                               self.previous_label, previous_label=self.label)


@Operations.implementation_for(SecurityLabelOp)
def _security_label(operations: Operations, operation: SecurityLabelOp) -> None:
    operations.execute(
        text("SELECT veil.security_label(:policy, :object_type, :object_name, :label)").bindparams(
            policy=operation.policy,
            object_type=operation.object_type,
            object_name=operation.object_name,
            label=operation.label,
        )
    )


@Operations.register_operation("rotate_key")
class RotateKeyOp(MigrateOperation):
    """Make a new token key current (reverse: destroy it, the previous key is current again)."""

    def __init__(self, undo: bool = False) -> None:
        self.undo = undo

    @classmethod
    def rotate_key(cls, operations: Operations) -> None:
        operations.invoke(cls())

    def reverse(self) -> RotateKeyOp:
        return RotateKeyOp(undo=not self.undo)


@Operations.implementation_for(RotateKeyOp)
def _rotate_key(operations: Operations, operation: RotateKeyOp) -> None:
    function = "veil.unrotate_key()" if operation.undo else "veil.rotate_key()"
    operations.execute(text(f"SELECT {function}"))
