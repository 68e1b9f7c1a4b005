"""Outbound HTTP to URLs a caller gave us, without letting them reach our own network.

A job's `video_url`, `image_url`, `audio_url` or webhook URL is chosen by the caller, so a
naive client would let them make this service fetch `http://169.254.169.254/` (the cloud's
metadata service, with its credentials) or anything else only this machine can reach (SSRF).
This module is the one gate for such requests, shared by downloads (fetch.py) and webhooks:

* only `http` and `https`, no user name or password in the URL;
* the host is resolved ONCE, every address is checked against the policy, and the connection
  goes to a checked address, while the Host header and the TLS server name stay the host name
  (so a DNS answer that changes between check and connect, "DNS rebinding", cannot slip in);
* addresses that are not public unicast Internet addresses are refused unless the policy
  allows them: loopback, private (RFC 1918, fc00::/7), link-local (169.254/16, fe80::/10),
  carrier-grade NAT (100.64/10), multicast, unspecified, reserved and documentation ranges,
  and IPv6 forms that embed one of those (IPv4-mapped, 6to4, NAT64).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

from renderers.errors import CodedError, short_reason

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
USER_AGENT_DOWNLOADS = "avatar-agents-fetch/1"

# Ranges that Python's `is_global` misses or that are not meant to be reached (3.11's tables
# treat e.g. 192.88.99.0/24, the retired 6to4 relay anycast, as global).
_EXTRA_BLOCKED = tuple(
    ipaddress.ip_network(net)
    for net in (
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "64:ff9b:1::/48",  # local-use NAT64
        "fec0::/10",  # site-local (deprecated, still routed inside some networks)
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


@dataclass(frozen=True)
class FetchPolicy:
    """Which addresses outbound requests may reach, and how long and large they may be."""

    allow_private: bool = False
    """True: reach any address (a trusted, closed deployment). False: public addresses only."""
    allowed_networks: tuple[str, ...] = ()
    """CIDRs reachable even when not public, e.g. ("10.1.0.0/16",) for an in-VPC file server."""
    max_bytes: int = 500 * 1024 * 1024
    timeout_s: float = 120.0
    """The whole transfer, redirects included."""
    connect_timeout_s: float = 10.0
    max_redirects: int = 5
    ca_file: str | None = None
    """A PEM file of CAs to trust for https instead of the system's (a private CA)."""

    @cached_property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        # ValueError for a malformed CIDR: a configuration error, raised on first use.
        return tuple(ipaddress.ip_network(net, strict=False) for net in self.allowed_networks)


class FetchError(CodedError):
    """A request refused or failed. `message` is for the user; `code` is stable;
    `upstream_status` is the HTTP status the server answered, when one did (not a status this
    service answers with: `status` stays None)."""

    def __init__(self, code: str, message: str, *, upstream_status: int | None = None) -> None:
        super().__init__(code, message)
        self.upstream_status = upstream_status


@dataclass(frozen=True)
class Target:
    """A checked http(s) URL, split into what the connection needs."""

    url: str
    scheme: str
    host: str  # the name (or literal address) as written, without brackets
    port: int
    request_target: str  # path and query, what goes on the request line

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}" + ("" if self.port in (80, 443) else f":{self.port}")


def parse_target(url: str) -> Target:
    """Check the URL's form (scheme, credentials, host, port) without touching the network."""
    if not isinstance(url, str) or not url:
        raise FetchError("url_invalid", "URL must be a non-empty string")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise FetchError("url_invalid", "URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:  # bad port, bad IPv6 literal
        raise FetchError("url_invalid", f"URL is not valid: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"'{scheme}:'" if scheme else "no scheme"
        raise FetchError(
            "url_scheme_not_allowed", f"URL has {shown}; only http and https URLs are fetched"
        )
    if "@" in parts.netloc:
        raise FetchError(
            "url_credentials_not_allowed",
            "URL must not contain a user name or password; use a presigned URL instead",
        )
    host = parts.hostname
    if not host:
        raise FetchError("url_invalid", "URL has no host")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Target(
        url=url,
        scheme=scheme,
        host=host,
        port=port if port is not None else (443 if scheme == "https" else 80),
        request_target=target,
    )


def address_refusal(address: IPAddress, policy: FetchPolicy) -> str | None:
    """Why `address` may not be reached under `policy` ("a loopback address"), or None."""
    if policy.allow_private or any(address in net for net in policy.networks):
        return None
    judged = _embedded_ipv4(address) or address
    if judged is not address and any(judged in net for net in policy.networks):
        return None
    if judged.is_loopback:
        return "a loopback address"
    if judged.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if judged.is_multicast:
        return "a multicast address"
    if judged.is_unspecified:
        return "an unspecified address"
    if judged in _CGNAT:
        return "a carrier-grade NAT address"
    if judged.is_reserved or any(judged in net for net in _EXTRA_BLOCKED):
        return "a reserved address"
    if judged.is_private or not judged.is_global:
        return "a private address"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, NAT64 or 6to4), if any: those
    reach that IPv4 host, so it is the one to judge."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def resolve_allowed(target: Target, policy: FetchPolicy) -> list[IPAddress]:
    """The host's addresses that the policy allows, resolved once; FetchError when none is."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise FetchError(
                "url_host_unresolved", f"could not resolve host '{target.host}'"
            ) from None
        addresses = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]))  # keeps an IPv6 scope ("%eth0")
            if address not in addresses:
                addresses.append(address)
    allowed = [a for a in addresses if address_refusal(a, policy) is None]
    if not allowed:
        reason = address_refusal(addresses[0], policy) if addresses else "no address"
        shown = target.host if literal is not None else f"{target.host} ({addresses[0]})"
        raise FetchError(
            "url_host_not_allowed",
            f"URL host {shown} is {reason}; only public Internet addresses are allowed",
        )
    return allowed


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a fixed address that still names the host in its Host header."""

    def __init__(self, target: Target, address: IPAddress, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self._address), self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """The same over TLS: the certificate is checked against the host name (SNI as well)."""

    default_port = http.client.HTTPS_PORT

    def __init__(
        self, target: Target, address: IPAddress, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(target, address, timeout)
        self._context = context

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


def tls_context(policy: FetchPolicy) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=policy.ca_file)


class Deadline:
    """One time budget for a whole transfer, spread over its connects and reads."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return self._end - time.monotonic()

    def timeout(self, cap: float | None = None) -> float:
        """Seconds a blocking call may take now; TimeoutError once the budget is spent."""
        left = self.left()
        if left <= 0:
            raise TimeoutError
        return min(left, cap) if cap is not None else left


class Exchange:
    """One request's answer: the response and the socket it is read from, so that every read
    can be given only what is left of the transfer's time budget."""

    def __init__(
        self,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        sock: socket.socket,
        deadline: Deadline,
    ) -> None:
        self.conn = conn
        self.response = response
        self._sock = sock  # http.client drops conn.sock once a closing response is read
        self._deadline = deadline

    @property
    def status(self) -> int:
        return self.response.status

    def header(self, name: str) -> str | None:
        return self.response.getheader(name)

    def read_chunk(self, size: int) -> bytes:
        """Up to `size` bytes of the body (b"" at its end); TimeoutError past the deadline."""
        self._sock.settimeout(self._deadline.timeout())
        return self.response.read1(size)

    def close(self) -> None:
        self.response.close()
        self.conn.close()

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_request(
    target: Target,
    policy: FetchPolicy,
    deadline: Deadline,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Exchange:
    """Send one request to a checked address of `target` and read the response head.

    The caller reads the body and closes the exchange. Raises FetchError (host refused or
    unresolved, could not connect) and lets TimeoutError, OSError and
    http.client.HTTPException through for the caller to word.
    """
    addresses = resolve_allowed(target, policy)
    context = tls_context(policy) if target.scheme == "https" else None
    last_error: OSError | None = None
    for address in addresses:  # the checked addresses, in the resolver's order
        timeout = deadline.timeout(policy.connect_timeout_s)
        conn: http.client.HTTPConnection
        if context is not None:
            conn = _PinnedHTTPSConnection(target, address, timeout, context)
        else:
            conn = _PinnedHTTPConnection(target, address, timeout)
        try:
            conn.connect()
        except ssl.SSLError:
            conn.close()
            raise
        except OSError as error:  # refused, unreachable, connect timeout: try the next one
            conn.close()
            last_error = error
            continue
        sock = conn.sock
        assert sock is not None  # connect() set it
        try:
            conn.putrequest(method, target.request_target, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            sock.settimeout(deadline.timeout())
            conn.endheaders(body)
            sock.settimeout(deadline.timeout())
            return Exchange(conn, conn.getresponse(), sock, deadline)
        except BaseException:
            conn.close()
            raise
    if isinstance(last_error, TimeoutError):
        raise FetchError(
            "download_timeout",
            f"could not connect to {target.origin} within {policy.connect_timeout_s:g} s",
        )
    reason = _os_reason(last_error)
    raise FetchError("download_failed", f"could not connect to {target.origin}: {reason}")


def describe_failure(error: BaseException, target: Target) -> str:
    """A short, human reason for a transport failure, never a traceback."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate of {target.host} not trusted: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS error talking to {target.origin}: {error.reason or 'handshake failed'}"
    if isinstance(error, http.client.RemoteDisconnected):
        return f"{target.origin} closed the connection without answering"
    if isinstance(error, http.client.IncompleteRead):
        return f"{target.origin} cut its response short"
    if isinstance(error, http.client.HTTPException):
        return f"{target.origin} sent an invalid HTTP response"
    return f"connection to {target.origin} failed: {_os_reason(error)}"


def _os_reason(error: BaseException | None) -> str:
    if error is None:
        return "no address to connect to"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, ConnectionAbortedError):
        return "connection aborted"
    if isinstance(error, BrokenPipeError):
        return "connection closed"
    return short_reason(error, "network error").lower()
