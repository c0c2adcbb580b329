"""Who a connection reached: enough to tell two databases apart, so that a
command writing into or judging a target refuses the source itself."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from pgveil import preflight


@dataclass(frozen=True)
class ServerIdentity:
    system_identifier: str | None
    started: str
    port: str
    database_oid: int
    database: str
    version_num: int
    version: str

    @property
    def major(self) -> int:
        return self.version_num // 10000

    @property
    def source_key(self) -> str:
        server = self.system_identifier or f"port {self.port}"
        return f"{server}/{self.database}"

    def same_database(self, other: ServerIdentity) -> bool:
        if self.system_identifier and other.system_identifier:
            same_server = self.system_identifier == other.system_identifier
        else:
            same_server = (self.started, self.port) == (other.started, other.port)
        return same_server and self.database_oid == other.database_oid


def identify(url: str) -> ServerIdentity:
    with preflight.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version_num')::integer, current_setting('server_version'),"
            " pg_catalog.pg_postmaster_start_time()::text, current_setting('port'), d.oid::bigint, d.datname"
            " FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()"
        ).fetchone()
        assert row is not None
        try:
            found = conn.execute("SELECT system_identifier::text FROM pg_catalog.pg_control_system()").fetchone()
            system = str(found[0]) if found else None
        except psycopg.Error:
            system = None  # pg_control_system() is for superusers and pg_monitor: the fingerprint then
    return ServerIdentity(system, str(row[2]), str(row[3]), int(row[4]), str(row[5]), int(row[0]), str(row[1]))
