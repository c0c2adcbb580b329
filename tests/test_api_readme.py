"""The README's curl examples of the REST API, run as written against a real
`pgveil api` service (uvicorn in its own process) and a real database; only the
settings block they read from the environment is replaced by this test's."""

from __future__ import annotations

import gzip
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.helpers import label, scratch_database
from tests.webhook_receiver import Receiver

REPO = Path(__file__).resolve().parent.parent
TOKEN = "readme-token-0123456789"


def examples() -> list[str]:
    """The shell blocks between the README's api-examples markers; the first sets the
    settings the others read."""
    text = (REPO / "README.md").read_text()
    section = text.split("<!-- api-examples:start -->", 1)[1].split("<!-- api-examples:end -->", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def service(tmp_path):
    port = free_port()
    env = {**os.environ, "PGVEIL_API_TOKEN": TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-m", "pgveil", "api", "--port", str(port), "--data-dir", str(tmp_path / "api")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.2)
    yield url, tmp_path / "api", process
    if process.poll() is None:
        process.terminate()
        process.communicate(timeout=60)


def test_the_readme_examples_work_as_written(toolkit, service):
    url, data_dir, process = service
    toolkit.execute("CREATE TABLE public.customer (id serial PRIMARY KEY, email text NOT NULL)")
    toolkit.execute(
        "INSERT INTO public.customer (email) SELECT 'person' || i || '@shop.example' FROM generate_series(1, 50) i"
    )
    # The policy `anon` the examples' copy is made under.
    toolkit.execute("SELECT veil.create_policy('anon', 'static')")
    label(toolkit, "column", "public.customer.id", "NOT MASKED", "anon")
    label(toolkit, "column", "public.customer.email", "MASKED WITH FUNCTION veil.token(email, 'email')", "anon")
    params = conninfo_to_dict(toolkit.url)
    receiver = Receiver()
    try:
        with scratch_database(toolkit) as target_url:
            blocks = examples()
            assert len(blocks) >= 4 and "export PGVEIL_API=" in blocks[0]
            env = {
                **os.environ,
                "PGVEIL_API": url,
                "PGVEIL_API_TOKEN": TOKEN,
                "PGHOST": str(params.get("host") or "localhost"),
                "PGPORT": str(params.get("port") or 5432),
                "PGDATABASE": str(params["dbname"]),
                "PGUSER": str(params["user"]),
                "PGPASSWORD": str(params.get("password") or ""),
                "WEBHOOK_URL": receiver.url,
                "TARGET_DB": str(conninfo_to_dict(target_url)["dbname"]),
            }
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", "\n".join(blocks[1:])],
                env=env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            with psycopg.connect(target_url) as conn:
                copied = [r[0] for r in conn.execute("SELECT email FROM public.customer")]
        events = receiver.wait_for(2)
    finally:
        receiver.close()
    assert '"status":"success"' in done.stdout
    # The service's own log (uvicorn's access lines included) never shows the password.
    process.terminate()
    log, _ = process.communicate(timeout=60)
    assert params.get("password") and str(params["password"]) not in log
    assert [(e["operation_id"], e["status"]) for e in events] == [
        ("readme-dump-1", "in_progress"),
        ("readme-dump-1", "success"),
    ]
    assert events[1]["webhook_metadata"] == {"ticket": "OPS-42"} and events[1]["size"] > 0
    dump = data_dir / "dumps" / "shop-masked"
    assert (dump / "toc.dat").is_file()
    # The rules ran: no source e-mail in the archive's data or in the copy.
    written = b"".join(
        gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes() for p in dump.glob("*.dat*")
    )
    assert written.count(b"\n") >= 50 and len(copied) == 50
    with psycopg.connect(toolkit.url) as conn:
        for (email,) in conn.execute("SELECT email FROM public.customer"):
            assert email.encode() not in written and email not in copied
