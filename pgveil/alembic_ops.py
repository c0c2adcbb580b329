"""Alembic operations for declaring pgveil policy in migrations.

Importing this module registers them, after which a revision can write::

    op.security_label("mask", "COLUMN", "public.customer.email",
                      "MASKED WITH FUNCTION veil.partial_email(email)")
    op.mask_role("analyst")
    op.rotate_key()
    op.stream_table("public.customer")
    with op.get_context().autocommit_block():
        op.backfill_table("public.customer")
    op.publish_sanitized("pgveil_sanitized")

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

    def __init__(
        self, policy: str, object_type: str, object_name: str, label: str | None, previous_label: str | None = None
    ) -> None:
        self.policy = policy
        self.object_type = object_type
        self.object_name = object_name
        self.label = label
        self.previous_label = previous_label

    @classmethod
    def security_label(
        cls,
        operations: Operations,
        policy: str,
        object_type: str,
        object_name: str,
        label: str | None,
        *,
        previous_label: str | None = None,
    ) -> None:
        operations.invoke(cls(policy, object_type, object_name, label, previous_label))

    def reverse(self) -> SecurityLabelOp:
        return SecurityLabelOp(
            self.policy, self.object_type, self.object_name, self.previous_label, previous_label=self.label
        )


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


@Operations.register_operation("mask_role")
class MaskRoleOp(MigrateOperation):
    """Mask a role under a views policy (reverse: unmask it, restoring its search_path and grants)."""

    def __init__(self, role: str, policy: str = "mask", remove: bool = False) -> None:
        self.role = role
        self.policy = policy
        self.remove = remove

    @classmethod
    def mask_role(cls, operations: Operations, role: str, policy: str = "mask") -> None:
        operations.invoke(cls(role, policy))

    @classmethod
    def unmask_role(cls, operations: Operations, role: str, policy: str = "mask") -> None:
        operations.invoke(cls(role, policy, remove=True))

    def reverse(self) -> MaskRoleOp:
        return MaskRoleOp(self.role, self.policy, remove=not self.remove)


Operations.register_operation("unmask_role", "unmask_role")(MaskRoleOp)


@Operations.implementation_for(MaskRoleOp)
def _mask_role(operations: Operations, operation: MaskRoleOp) -> None:
    # The role's name is one identifier, quoted as such for the label's object name.
    operations.execute(
        text("SELECT veil.security_label(:policy, 'ROLE', pg_catalog.quote_ident(:role), :label)").bindparams(
            policy=operation.policy, role=operation.role, label=None if operation.remove else "MASKED"
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


@Operations.register_operation("stream_table")
class StreamTableOp(MigrateOperation):
    """Stream a table into the sanitized schema (reverse: unstream it)."""

    def __init__(self, source: str, policy: str = "sanitized", remove: bool = False) -> None:
        self.source = source
        self.policy = policy
        self.remove = remove

    @classmethod
    def stream_table(cls, operations: Operations, source: str, policy: str = "sanitized") -> None:
        operations.invoke(cls(source, policy))

    @classmethod
    def unstream_table(cls, operations: Operations, source: str) -> None:
        operations.invoke(cls(source, remove=True))

    def reverse(self) -> StreamTableOp:
        return StreamTableOp(self.source, self.policy, remove=not self.remove)


Operations.register_operation("unstream_table", "unstream_table")(StreamTableOp)


@Operations.implementation_for(StreamTableOp)
def _stream_table(operations: Operations, operation: StreamTableOp) -> None:
    if operation.remove:
        statement = text("SELECT veil.unstream(CAST(:source AS regclass))").bindparams(source=operation.source)
    else:
        statement = text("SELECT veil.stream(CAST(:source AS regclass), :policy)").bindparams(
            source=operation.source, policy=operation.policy
        )
    operations.execute(statement)


@Operations.register_operation("backfill_table")
class BackfillTableOp(MigrateOperation):
    """Copy a streamed table's existing rows in committed batches.

    Run it inside ``op.get_context().autocommit_block()``: the backfill commits
    per batch, so that a big table never makes one huge transaction.
    """

    def __init__(self, source: str, batch_size: int = 10_000) -> None:
        self.source = source
        self.batch_size = batch_size

    @classmethod
    def backfill_table(cls, operations: Operations, source: str, batch_size: int = 10_000) -> None:
        operations.invoke(cls(source, batch_size))


@Operations.implementation_for(BackfillTableOp)
def _backfill_table(operations: Operations, operation: BackfillTableOp) -> None:
    operations.execute(
        text("CALL veil.backfill(CAST(:source AS regclass), :batch_size)").bindparams(
            source=operation.source, batch_size=operation.batch_size
        )
    )


@Operations.register_operation("publish_sanitized")
class PublishSanitizedOp(MigrateOperation):
    """Publish every sanitized copy for logical replication (reverse: drop the publication).

    The publication holds the copies and nothing else, and follows later
    ``stream_table``/``unstream_table`` by itself (docs/replication.md).
    """

    def __init__(self, name: str = "pgveil_sanitized", remove: bool = False) -> None:
        self.name = name
        self.remove = remove

    @classmethod
    def publish_sanitized(cls, operations: Operations, name: str = "pgveil_sanitized") -> None:
        operations.invoke(cls(name))

    @classmethod
    def unpublish_sanitized(cls, operations: Operations, name: str = "pgveil_sanitized") -> None:
        operations.invoke(cls(name, remove=True))

    def reverse(self) -> PublishSanitizedOp:
        return PublishSanitizedOp(self.name, remove=not self.remove)


Operations.register_operation("unpublish_sanitized", "unpublish_sanitized")(PublishSanitizedOp)


@Operations.implementation_for(PublishSanitizedOp)
def _publish_sanitized(operations: Operations, operation: PublishSanitizedOp) -> None:
    function = "veil.unpublish_sanitized" if operation.remove else "veil.publish_sanitized"
    operations.execute(text(f"SELECT {function}(:name)").bindparams(name=operation.name))
