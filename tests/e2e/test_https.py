"""End to end: manage.py runserver --https, with and without the reloader.

The tests that use ``server_mode`` run in WSGI and in ASGI mode
(tests/e2e/conftest.py); the wss:// one in ASGI mode only.
"""

from __future__ import annotations

import http.client
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.sync.client import connect
from websockets.typing import Origin

from tests.certs import user_pair
from tests.e2e.harness import StartServer, server_env
from tests.e2e.test_reload import (
    HELLO,
    RELOAD_TIMEOUT,
    Client,
    edit,
    expect_error_page,
    pid_info,
    save_versions_under_load,
    wait_for_new_worker,
    wait_for_status,
)
from tests.live import SERVER_MODE

pytestmark = pytest.mark.e2e

ADDRPORT = "127.0.0.1:0"
#: A TLS ClientHello, begun and never finished.
STALLED_HELLO = b"\x16\x03\x01\x02\x00\x01"


@pytest.mark.usefixtures("server_mode")
def test_noreload_serves_https_and_redirects_plain_http(
    start_server: StartServer, ca_dir: Path
) -> None:
    server = start_server(ADDRPORT, "--https", "--noreload")
    asgi = SERVER_MODE.get() == "asgi"
    server.wait_for_stdout(
        rf"^Starting {'ASGI' if asgi else '(WSGI )?'}\s?development server at "
        r"https://127\.0\.0\.1:\d+/$"
    )
    server.wait_for_stdout(
        rf"^HTTPS: the local certificate authority {ca_dir / 'ca.pem'} is not trusted"
    )
    echo = server.get("/echo/?x=1").json()
    assert (echo["scheme"], echo["is_secure"]) == ("https", True)
    if not asgi:
        assert echo["meta"]["wsgi.url_scheme"] == "https"

    plain = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        plain.request("GET", "/echo/?x=1")
        response = plain.getresponse()
        assert response.status == 308
        assert response.headers["Location"] == (
            f"https://{server.host}:{server.port}/echo/?x=1"
        )
    finally:
        plain.close()

    big = server.get("/static/files/big.bin")
    assert big.status == 200
    assert len(big.body) == int(big.headers["Content-Length"]) > 0
    ranged = server.get("/static/files/big.bin", headers={"Range": "bytes=10-19"})
    assert (ranged.status, ranged.body) == (206, big.body[10:20])
    etag = big.headers["ETag"]
    assert (
        server.get("/static/files/big.bin", headers={"If-None-Match": etag}).status
        == 304
    )

    server.send_signal(signal.SIGTERM)
    assert server.wait(10) == 0
    assert "Traceback" not in server.stderr_text()


@pytest.mark.usefixtures("server_mode")
def test_a_client_without_the_authority_fails_verification(
    start_server: StartServer,
) -> None:
    server = start_server(ADDRPORT, "--https", "--noreload")
    server.tls_context = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        server.get("/hello/")


@pytest.mark.usefixtures("server_mode")
def test_no_request_fails_while_the_worker_restarts_under_tls_load(
    start_server: StartServer, project_dir: Path
) -> None:
    server = start_server(ADDRPORT, "--https")
    views = project_dir / "testapp" / "views.py"
    versions = [HELLO] + [f"Hello, version {n}!\n".encode() for n in range(1, 4)]
    # Each request on a new connection: a full handshake each time, some of
    # them arriving while no worker accepts.
    clients = [Client(server, "/hello/") for _ in range(6)]
    save_versions_under_load(clients, views, versions)
    errors = [error for client in clients for error in client.errors]
    requests = sum(len(client.statuses) + len(client.errors) for client in clients)
    assert errors == [], f"{len(errors)} of {requests} requests failed"
    assert {s for client in clients for s in client.statuses} == {200}


@pytest.mark.usefixtures("server_mode")
def test_the_error_page_is_served_over_tls(
    start_server: StartServer, project_dir: Path
) -> None:
    server = start_server(ADDRPORT, "--https")
    before = pid_info(server)
    views = project_dir / "testapp" / "views.py"
    good = views.read_text()
    views.write_text(good + "\ndef broken(:\n")
    wait_for_status(server, 500)
    assert "SyntaxError" in expect_error_page(server)
    server.wait_for_stderr(r"at https://127\.0\.0\.1:\d+/ with the error")
    views.write_text(good)
    wait_for_new_worker(server, before["boot_id"])
    assert server.get("/hello/").body == HELLO


@pytest.mark.usefixtures("server_mode")
def test_a_handshake_stalled_across_a_restart_does_not_hold_it_up(
    start_server: StartServer, project_dir: Path
) -> None:
    server = start_server(ADDRPORT, "--https")
    before = pid_info(server)
    with socket.create_connection((server.host, server.port), timeout=10) as stalled:
        stalled.sendall(STALLED_HELLO)
        edit(project_dir / "testapp" / "views.py", "Hello", "Hello again")
        after = wait_for_new_worker(server, before["boot_id"], RELOAD_TIMEOUT)
        assert after["pid"] != before["pid"]
        # The old worker drops the stalled client when its drain ends.
        stalled.settimeout(15)
        assert stalled.recv(1) == b""


@pytest.mark.usefixtures("server_mode")
def test_the_users_files_are_served(start_server: StartServer, tmp_path: Path) -> None:
    cert, key = user_pair(tmp_path, names=("localhost", "127.0.0.1"))
    server = start_server(
        ADDRPORT, "--noreload", "--cert-file", str(cert), "--key-file", str(key)
    )
    server.tls_context = ssl.create_default_context(cafile=cert)
    assert server.get("/hello/").body == HELLO
    server.wait_for_stdout("HTTPS: the certificate is not trusted by this system")


@pytest.mark.parametrize("reload", [True, False], ids=["reloader", "noreload"])
def test_a_bad_certificate_is_one_line_and_no_traceback(
    project_dir: Path, tmp_path: Path, reload: bool
) -> None:
    cert, _ = user_pair(tmp_path)
    _, other_key = user_pair(tmp_path, stem="other")
    args = [sys.executable, "manage.py", "runserver", ADDRPORT,
            "--cert-file", str(cert), "--key-file", str(other_key)]  # fmt: skip
    if not reload:
        args.append("--noreload")
    result = subprocess.run(
        args, cwd=project_dir, env=server_env(), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"CommandError: The key in {other_key} does not match the certificate "
        f"in {cert}."
    )


def test_wss_echoes_through_the_channels_consumer_beside_a_stalled_handshake(
    start_server: StartServer,
) -> None:
    pytest.importorskip("channels")
    server = start_server(ADDRPORT, "--https", env={"TESTPROJECT_ASGI": "1"})
    url = f"wss://{server.host}:{server.port}/ws/echo/"
    origin = server.base_url.rstrip("/")
    with socket.create_connection((server.host, server.port), timeout=10) as stalled:
        stalled.sendall(STALLED_HELLO)
        # The event loop serves others while that handshake waits.
        with connect(
            url,
            ssl=server.https_context(),
            origin=Origin(origin),
            open_timeout=10,
        ) as ws:
            ws.send("over tls")
            assert ws.recv(10) == "over tls"
            ws.send(b"\x00\x01")
            assert ws.recv(10) == b"\x00\x01"
        assert server.get("/hello/").body == HELLO
    server.wait_for_stderr(r'"WSCONNECT /ws/echo/" 101 - [0-9.]+m?s$')
    server.wait_for_stderr(r'"WSDISCONNECT /ws/echo/" 101 - [0-9.]+m?s code 1000$')
