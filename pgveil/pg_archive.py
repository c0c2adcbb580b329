"""pg_dump's directory-format table of contents (``toc.dat``), read and written.

pgveil takes an archive's schema from ``pg_dump`` itself and adds the table data it
computes, so that stock ``pg_restore`` loads the result. This module knows the file
format (pg_dump's src/bin/pg_dump/pg_backup_archiver.c, ``WriteHead``/``WriteToc``):
a header, then one record per object. Integers are a sign byte and ``int_size``
little-endian bytes; strings are a length (-1 for none) and their bytes, kept as
bytes-exact text (surrogateescape) so that a file read and written again is the same.

Archive versions 1.14 (pg_dump 12–15), 1.15 (16) and 1.16 (17, 18) are understood;
another version is refused rather than guessed at.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from pgveil.errors import PgveilError

MAGIC = b"PGDMP"
FORMAT_DIRECTORY = 3
VERSIONS = ((1, 14), (1, 15), (1, 16))
# teSection of pg_backup.h.
SECTION_NONE, SECTION_PRE_DATA, SECTION_DATA, SECTION_POST_DATA = 1, 2, 3, 4
# pg_compress.h's algorithms, as the 1.15+ header records them.
COMPRESSION_NONE, COMPRESSION_GZIP = 0, 1
TOC_FILE = "toc.dat"


@dataclass
class Header:
    version: tuple[int, int, int]
    int_size: int
    offset_size: int
    archive_format: int
    # 1.14: the gzip level (-1 default, 0 none); 1.15+: the algorithm (COMPRESSION_*).
    compression: int
    created: tuple[int, int, int, int, int, int, int]
    database: str | None
    server_version: str | None
    dump_version: str | None

    @property
    def compressed(self) -> bool:
        if self.version[:2] >= (1, 15):
            return self.compression != COMPRESSION_NONE
        return self.compression != 0


@dataclass
class Entry:
    dump_id: int
    had_dumper: bool
    table_oid: str | None
    oid: str | None
    tag: str | None
    desc: str | None
    section: int
    defn: str | None
    drop_stmt: str | None
    copy_stmt: str | None
    namespace: str | None
    tablespace: str | None
    table_am: str | None
    # 1.16+ only (the relation's relkind, 0 for other objects).
    relkind: int
    owner: str | None
    with_oids: str | None
    dependencies: list[int] = field(default_factory=list)
    # The entry's data file in the directory ("3355.dat"), "" when it has none.
    filename: str | None = ""


@dataclass
class Toc:
    header: Header
    entries: list[Entry]

    def by_id(self) -> dict[int, Entry]:
        return {e.dump_id: e for e in self.entries}

    def data_suffix(self) -> str:
        """What pg_dump appends to a data file's name for the archive's compression."""
        return ".gz" if self.header.compressed else ""


class _Reader:
    def __init__(self, data: bytes, source: str) -> None:
        self.stream = io.BytesIO(data)
        self.source = source
        self.int_size = 4

    def take(self, n: int) -> bytes:
        chunk = self.stream.read(n)
        if len(chunk) != n:
            raise PgveilError(f"{self.source} is truncated: not a complete pg_dump table of contents")
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def int(self) -> int:
        negative = self.byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        return -value if negative else value

    def str(self) -> str | None:
        length = self.int()
        if length < 0:
            return None
        return self.take(length).decode("utf-8", "surrogateescape")


class _Writer:
    def __init__(self, stream: BinaryIO, int_size: int) -> None:
        self.stream = stream
        self.int_size = int_size

    def byte(self, value: int) -> None:
        self.stream.write(bytes((value,)))

    def int(self, value: int) -> None:
        self.byte(1 if value < 0 else 0)
        self.stream.write(abs(value).to_bytes(self.int_size, "little"))

    def str(self, value: str | None) -> None:
        if value is None:
            self.int(-1)
            return
        raw = value.encode("utf-8", "surrogateescape")
        self.int(len(raw))
        self.stream.write(raw)


def parse(data: bytes, source: str = TOC_FILE) -> Toc:
    """A directory archive's table of contents from its bytes; refuses anything else."""
    r = _Reader(data, source)
    if r.stream.read(5) != MAGIC:
        raise PgveilError(f"{source} is not a pg_dump archive's table of contents")
    version = (r.byte(), r.byte(), r.byte())
    if version[:2] not in VERSIONS:
        known = ", ".join(f"{a}.{b}" for a, b in VERSIONS)
        raise PgveilError(
            f"{source} is a pg_dump archive of version {version[0]}.{version[1]}: pgveil reads versions {known}"
        )
    r.int_size = r.byte()
    offset_size = r.byte()
    archive_format = r.byte()
    if archive_format != FORMAT_DIRECTORY:
        raise PgveilError(f"{source} is not a directory-format archive (format {archive_format})")
    compression = r.byte() if version[:2] >= (1, 15) else r.int()
    created = (r.int(), r.int(), r.int(), r.int(), r.int(), r.int(), r.int())
    header = Header(version, r.int_size, offset_size, archive_format, compression, created, r.str(), r.str(), r.str())
    entries = [_read_entry(r, version) for _ in range(r.int())]
    if r.stream.read(1):
        raise PgveilError(f"{source} has bytes after its last entry: it is corrupt")
    return Toc(header, entries)


def _read_entry(r: _Reader, version: tuple[int, int, int]) -> Entry:
    dump_id, had_dumper = r.int(), r.int() != 0
    table_oid, oid, tag, desc = r.str(), r.str(), r.str(), r.str()
    section = r.int()
    defn, drop_stmt, copy_stmt, namespace, tablespace, table_am = r.str(), r.str(), r.str(), r.str(), r.str(), r.str()
    relkind = r.int() if version[:2] >= (1, 16) else 0
    owner, with_oids = r.str(), r.str()
    dependencies = []
    while (dep := r.str()) is not None:
        dependencies.append(int(dep))
    filename = r.str()
    return Entry(
        dump_id, had_dumper, table_oid, oid, tag, desc, section, defn, drop_stmt, copy_stmt, namespace,
        tablespace, table_am, relkind, owner, with_oids, dependencies, filename,
    )  # fmt: skip


def serialize(toc: Toc) -> bytes:
    h = toc.header
    stream = io.BytesIO()
    w = _Writer(stream, h.int_size)
    stream.write(MAGIC + bytes(h.version) + bytes((h.int_size, h.offset_size, h.archive_format)))
    if h.version[:2] >= (1, 15):
        w.byte(h.compression)
    else:
        w.int(h.compression)
    for part in h.created:
        w.int(part)
    w.str(h.database)
    w.str(h.server_version)
    w.str(h.dump_version)
    w.int(len(toc.entries))
    for e in toc.entries:
        w.int(e.dump_id)
        w.int(1 if e.had_dumper else 0)
        for text in (e.table_oid, e.oid, e.tag, e.desc):
            w.str(text)
        w.int(e.section)
        for text in (e.defn, e.drop_stmt, e.copy_stmt, e.namespace, e.tablespace, e.table_am):
            w.str(text)
        if h.version[:2] >= (1, 16):
            w.int(e.relkind)
        w.str(e.owner)
        w.str(e.with_oids)
        for dep in e.dependencies:
            w.str(str(dep))
        w.str(None)
        w.str(e.filename)
    return stream.getvalue()


def read(directory: Path) -> Toc:
    path = directory / TOC_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PgveilError(f"{directory} is not a directory-format archive: it has no {TOC_FILE}") from None
    return parse(data, str(path))


def write(directory: Path, toc: Toc) -> None:
    (directory / TOC_FILE).write_bytes(serialize(toc))


def table_data_entry(table: Entry, dump_id: int, copy_stmt: str) -> Entry:
    """The TABLE DATA entry pg_dump would write for a TABLE entry: its data in
    ``<dump_id>.dat``, depending on the table (first), so that pg_restore ties the
    table's indexes and constraints to it in a parallel restore."""
    return replace(
        table,
        dump_id=dump_id,
        had_dumper=True,
        table_oid="0",
        desc="TABLE DATA",
        section=SECTION_DATA,
        defn=None,
        drop_stmt=None,
        copy_stmt=copy_stmt,
        tablespace=None,
        table_am=None,
        dependencies=[table.dump_id],
        filename=f"{dump_id}.dat",
    )
