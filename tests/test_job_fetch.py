"""fetch_to_file against a real HTTP(S) server on loopback: what is fetched, what is refused."""

from __future__ import annotations

import base64
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from control_api.jobs.fetch import FetchError, FetchPolicy, fetch_to_file
from control_api.jobs.outbound import address_refusal, parse_target
from tests.loopback_http import QuietHandler, self_signed_tls, serving

PAYLOAD = os.urandom(300_000)  # larger than one read, so streaming is exercised
LOOPBACK = FetchPolicy(allowed_networks=("127.0.0.0/8",), timeout_s=10.0)


class Routes(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802 (stdlib's name)
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/video.mp4":
            self.send_body(200, PAYLOAD, "video/mp4; name=x")
        elif url.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path == "/host":
            self.send_body(200, self.headers["Host"].encode())
        elif url.path == "/declared-big":
            self.send_body(200, b"x" * 5000)
        elif url.path == "/undeclared-big":  # no Content-Length: the body ends at close
            self.send_response(200)
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"y" * 1000)
        elif url.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                self.wfile.write(b"z")
                self.wfile.flush()
                time.sleep(0.05)
        elif url.path == "/cut-off":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"w" * 10)
        else:
            self.send_body(404, b"no such file")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serving(Routes) as base:
        yield base


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def fetch_error(url: str, tmp_path: Path, policy: FetchPolicy = LOOPBACK) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetch_to_file(url, tmp_path / "out.bin", policy)
    assert leftovers(tmp_path) == [], "a failed fetch must leave no file behind"
    return caught.value


def test_downloads_from_an_allowed_network(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "in" / "video.mp4"
    fetched = fetch_to_file(f"{server}/video.mp4", dest, LOOPBACK)
    assert dest.read_bytes() == PAYLOAD
    assert (fetched.path, fetched.bytes) == (dest, len(PAYLOAD))
    assert fetched.content_type == "video/mp4"
    assert fetched.final_url == f"{server}/video.mp4"
    assert leftovers(dest.parent) == ["video.mp4"]


def test_loopback_is_refused_by_default(server: str, tmp_path: Path) -> None:
    error = fetch_error(f"{server}/video.mp4", tmp_path, FetchPolicy())
    assert error.code == "url_host_not_allowed"
    assert "127.0.0.1 is a loopback address" in error.message
    assert "Traceback" not in error.message


def test_a_name_resolving_to_loopback_is_refused_by_default(server: str, tmp_path: Path) -> None:
    port = urlsplit(server).port
    error = fetch_error(f"http://localhost:{port}/video.mp4", tmp_path, FetchPolicy())
    assert error.code == "url_host_not_allowed"
    assert "localhost (" in error.message and "loopback" in error.message


def test_connects_to_the_checked_address_but_names_the_host(server: str, tmp_path: Path) -> None:
    port = urlsplit(server).port
    fetched = fetch_to_file(f"http://localhost:{port}/host", tmp_path / "host", LOOPBACK)
    assert fetched.path.read_text() == f"localhost:{port}"


def test_the_host_is_resolved_once_per_hop(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a name that answers a harmless address to the check and the metadata
    service's afterwards must still be fetched from the address that was checked."""
    port = urlsplit(server).port
    real_getaddrinfo = socket.getaddrinfo
    answers = ["127.0.0.1", "169.254.169.254"]
    asked: list[str] = []

    def rebinding_dns(host: str, *args: object, **kwargs: object) -> list:
        if host != "rebind.test":
            return real_getaddrinfo(host, *args, **kwargs)
        asked.append(host)
        return real_getaddrinfo(answers[min(len(asked), 2) - 1], *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
    fetched = fetch_to_file(
        f"http://rebind.test:{port}/host",
        tmp_path / "host",
        FetchPolicy(allowed_networks=("127.0.0.0/8",), timeout_s=5),
    )
    assert fetched.path.read_text() == f"rebind.test:{port}"
    assert asked == ["rebind.test"]


def test_a_redirect_to_a_refused_host_is_refused(server: str, tmp_path: Path) -> None:
    port = urlsplit(server).port
    # Allowed hop to allowed hop works ...
    fetched = fetch_to_file(f"{server}/redirect?to=/video.mp4", tmp_path / "a", LOOPBACK)
    assert fetched.path.read_bytes() == PAYLOAD
    assert fetched.final_url == f"{server}/video.mp4"
    (tmp_path / "a").unlink()
    # ... but every hop is checked again: the metadata service, another loopback address
    # outside the allowed /32, and a scheme that is not http.
    only_one = FetchPolicy(allowed_networks=("127.0.0.1/32",), timeout_s=5)
    for to, code in [
        ("http://169.254.169.254/latest/meta-data/", "url_host_not_allowed"),
        (f"http://127.0.0.2:{port}/video.mp4", "url_host_not_allowed"),
        (f"http://[::ffff:127.0.0.2]:{port}/video.mp4", "url_host_not_allowed"),
        ("file:///etc/passwd", "url_scheme_not_allowed"),
    ]:
        assert fetch_error(f"{server}/redirect?to={to}", tmp_path, only_one).code == code


def test_too_many_redirects(server: str, tmp_path: Path) -> None:
    url = f"{server}/video.mp4"
    for _ in range(3):
        url = f"{server}/redirect?to={quote(url, safe='')}"
    policy = FetchPolicy(allowed_networks=("127.0.0.0/8",), max_redirects=2, timeout_s=5)
    assert fetch_error(url, tmp_path, policy).code == "too_many_redirects"
    assert fetch_to_file(url, tmp_path / "ok", LOOPBACK).path.read_bytes() == PAYLOAD


def test_size_limit_declared_and_streamed(server: str, tmp_path: Path) -> None:
    small = FetchPolicy(allowed_networks=("127.0.0.0/8",), max_bytes=4096, timeout_s=5)
    for path in ("/declared-big", "/undeclared-big"):
        error = fetch_error(server + path, tmp_path, small)
        assert error.code == "download_too_large"
        assert "larger than 4.0 KiB" in error.message


def test_a_trickling_server_hits_the_overall_timeout(server: str, tmp_path: Path) -> None:
    policy = FetchPolicy(allowed_networks=("127.0.0.0/8",), timeout_s=0.6)
    started = time.monotonic()
    error = fetch_error(f"{server}/trickle", tmp_path, policy)
    elapsed = time.monotonic() - started
    assert error.code == "download_timeout"
    assert "timed out after 0.6 s" in error.message
    assert 0.5 < elapsed < 2.0  # every byte came in time; the whole did not


def test_a_cut_off_body_is_a_failure(server: str, tmp_path: Path) -> None:
    error = fetch_error(f"{server}/cut-off", tmp_path)
    assert error.code == "download_failed"
    assert "cut off after 10 of 1000 bytes" in error.message


def test_http_error_status(server: str, tmp_path: Path) -> None:
    error = fetch_error(f"{server}/nope", tmp_path)
    assert (error.code, error.upstream_status) == ("download_failed", 404)
    assert "HTTP 404" in error.message


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = fetch_error(f"http://127.0.0.1:{port}/x", tmp_path)
    assert error.code == "download_failed"
    assert "could not connect" in error.message


def test_data_uri(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(100)
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    fetched = fetch_to_file(uri, tmp_path / "p.png", FetchPolicy())
    assert fetched.path.read_bytes() == png
    assert (fetched.content_type, fetched.final_url) == ("image/png", "data:image/png")
    plain = fetch_to_file("data:,hello%20world", tmp_path / "t.txt", FetchPolicy())
    assert plain.path.read_bytes() == b"hello world"
    assert plain.content_type == "text/plain"


def test_data_uri_limits_and_errors(tmp_path: Path) -> None:
    big = "data:audio/wav;base64," + base64.b64encode(b"a" * 10_000).decode()
    assert fetch_error(big, tmp_path, FetchPolicy(max_bytes=1000)).code == "download_too_large"
    assert fetch_error("data:image/png;base64,***", tmp_path).code == "url_invalid"
    assert fetch_error("data:image/png;base64", tmp_path).code == "url_invalid"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("file:///etc/passwd", "url_scheme_not_allowed"),
        ("ftp://example.com/video.mp4", "url_scheme_not_allowed"),
        ("gopher://127.0.0.1:6379/_INFO", "url_scheme_not_allowed"),
        ("//example.com/video.mp4", "url_scheme_not_allowed"),
        ("http://user:secret@example.com/video.mp4", "url_credentials_not_allowed"),
        ("https://token@example.com/video.mp4", "url_credentials_not_allowed"),
        ("http://example.com:99999/", "url_invalid"),
        ("http:///path-only", "url_invalid"),
        ("http://exa mple.com/", "url_invalid"),
    ],
)
def test_malformed_or_unsafe_urls_are_refused(url: str, code: str, tmp_path: Path) -> None:
    error = fetch_error(url, tmp_path, FetchPolicy(allow_private=True))
    assert error.code == code
    assert "secret" not in error.message


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fd00::1]/", "private"),
        ("http://169.254.169.254/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://240.0.0.1/", "reserved"),
        ("http://192.0.2.1/", "private"),  # TEST-NET-1
        ("http://[::ffff:169.254.169.254]/", "link-local"),  # IPv4-mapped
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),  # NAT64 of 169.254.169.254
        ("http://[2002:a00:1::]/", "private"),  # 6to4 of 10.0.0.1
        ("http://[fec0::1]/", "reserved"),  # site-local
    ],
)
def test_non_public_addresses_are_refused(address: str, why: str, tmp_path: Path) -> None:
    error = fetch_error(address, tmp_path, FetchPolicy())
    assert error.code == "url_host_not_allowed"
    assert why in error.message


def test_public_addresses_pass_the_address_rules() -> None:
    import ipaddress

    for public in ("8.8.8.8", "1.1.1.1", "2606:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8"):
        assert address_refusal(ipaddress.ip_address(public), FetchPolicy()) is None, public
    assert parse_target("HTTPS://Example.COM/a?b=1#frag").request_target == "/a?b=1"


def test_local_files_hook_reads_our_own_files(tmp_path: Path) -> None:
    upload = tmp_path / "uploads" / "abc.wav"
    upload.parent.mkdir()
    upload.write_bytes(b"RIFF" + os.urandom(2000))
    own = "http://127.0.0.1:8080/files/abc.wav?expires=1&signature=x"

    def ours(url: str) -> Path | None:
        return upload if url == own else None

    # Loopback is refused by the default policy, yet our own file is copied from disk.
    fetched = fetch_to_file(own, tmp_path / "out" / "a.wav", FetchPolicy(), local_files=ours)
    assert fetched.path.read_bytes() == upload.read_bytes()
    assert fetched.content_type in ("audio/wav", "audio/x-wav")
    with pytest.raises(FetchError) as caught:
        fetch_to_file(own, tmp_path / "x.wav", FetchPolicy(max_bytes=100), local_files=ours)
    assert caught.value.code == "download_too_large"
    assert not (tmp_path / "x.wav").exists()
    with pytest.raises(FetchError) as caught:  # the hook said None: fetched, and refused
        fetch_to_file(own.replace("abc", "def"), tmp_path / "y", FetchPolicy(), local_files=ours)
    assert caught.value.code == "url_host_not_allowed"


def test_https_checks_the_certificate_against_the_name(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    tls, cert = self_signed_tls(tmp_path)
    with serving(Routes, tls=tls) as base:
        port = urlsplit(base).port
        url = f"https://localhost:{port}/host"
        trusting = FetchPolicy(allowed_networks=("127.0.0.0/8",), ca_file=str(cert), timeout_s=5)
        (tmp_path / "empty").mkdir()
        fetched = fetch_to_file(url, tmp_path / "out" / "host", trusting)
        assert fetched.path.read_text() == f"localhost:{port}"
        untrusting = FetchPolicy(allowed_networks=("127.0.0.0/8",), timeout_s=5)
        error = fetch_error(url, tmp_path / "empty", untrusting)
        assert error.code == "download_failed"
        assert "not trusted" in error.message
