"""SSRF guard: refuse internal addresses and pin each connection to the checked address.

``GuardedBackend`` is an httpcore network backend: ``connect_tcp`` resolves the host itself
(once per connection), checks every address and connects to a checked IP, never to the name,
so a DNS answer that changes between the check and the connection (rebinding) cannot redirect
it (TLS SNI still uses the hostname, which httpcore passes to ``start_tls``). Every connection
of a guarded transport — redirect hops and OAuth token requests included — goes through it.

``allowed_hosts`` lets a listed host reach internal addresses, except cloud-metadata and
link-local ones (``never_allowed``): no legitimate internal API lives there, and they hand out
cloud credentials.
"""
from __future__ import annotations

import ipaddress
import socket
import ssl
import typing
from collections.abc import Callable, Iterable
from functools import lru_cache

import anyio
import httpcore
import httpx
from httpcore._backends.anyio import AnyIOBackend

from connectors.errors import ConnectorError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Never reachable, whatever allowed_hosts says: link-local (169.254.169.254 is the metadata
# service of AWS, GCP, Azure, OpenStack...), AWS's IPv6 metadata address, Alibaba's metadata
# address (inside the CGNAT range) and Azure's host wireserver (a public-looking address).
_NEVER = (
    ("link-local", ipaddress.ip_network("169.254.0.0/16")),
    ("link-local", ipaddress.ip_network("fe80::/10")),
    ("cloud metadata", ipaddress.ip_network("fd00:ec2::254/128")),
    ("cloud metadata", ipaddress.ip_network("100.100.100.200/32")),
    ("cloud metadata", ipaddress.ip_network("168.63.129.16/32")),
)
Resolver = Callable[[str, int], list[str]]


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, 6to4 or NAT64 address stands for."""
    embedded = ip.ipv4_mapped or ip.sixtofour
    if embedded is None and ip in _NAT64:
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return embedded


def never_allowed(ip: IPAddress) -> str | None:
    """Why ``ip`` may never be reached, even when allowed (cloud metadata, link-local), or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            return never_allowed(embedded)
    return next((name for name, net in _NEVER if ip.version == net.version and ip in net), None)


def literal_address(host: str) -> IPAddress | None:
    """The IP address an ``allowed_hosts`` entry (host, host:port, [v6], [v6]:port) names
    literally, legacy IPv4 spellings included ("2852039166", "0xa9.0xfe.0xa9.0xfe"); None
    for a host name."""
    text = host.strip()
    candidates = [text.strip("[]")]
    if text.startswith("[") and "]" in text:
        candidates.append(text[1:text.index("]")])
    elif text.count(":") == 1:
        candidates.append(text.split(":", 1)[0])
    for candidate in candidates:
        try:
            return ipaddress.ip_address(candidate.split("%", 1)[0])
        except ValueError:
            pass
        if candidate and all(c.isalnum() or c == "." for c in candidate) and candidate[0].isdigit():
            try:
                return ipaddress.IPv4Address(socket.inet_aton(candidate))
            except OSError:
                pass
    return None


def _reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is internal, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            inner = _reason(embedded)
            return f"maps to {embedded}, {inner}" if inner else None
        if ip.is_site_local:
            return "site-local"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("carrier-grade NAT", isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not globally routable", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def _blocked(ip: object, reason: str, host: str | None) -> ConnectorError:
    target = f"{host!r} ({ip})" if host and host != str(ip) else str(ip)
    allow = repr(host) if host else "the host"
    return ConnectorError(
        "connection",
        f"blocked request to internal address {target}: {reason}. To allow it, add {allow} "
        "to the tenant setting allowed_hosts",
    )


def _forbidden(ip: object, reason: str, host: str | None) -> ConnectorError:
    target = f"{host!r} ({ip})" if host and host != str(ip) else str(ip)
    return ConnectorError(
        "connection",
        f"blocked request to internal address {target}: {reason}. Cloud-metadata and link-local "
        "addresses are never reachable (allowed_hosts cannot allow them)",
    )


def check_address(ip: str | IPAddress, host: str | None = None) -> None:
    """Raise ConnectorError(name="connection") when ``ip`` is not a public address."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0] if isinstance(ip, str) else ip)
    except ValueError:
        raise _blocked(ip, "not an IP address", host) from None
    forbidden = never_allowed(address)
    if forbidden:
        raise _forbidden(address, forbidden, host)
    reason = _reason(address)
    if reason:
        raise _blocked(address, reason, host)


def check_never_allowed(ip: str | IPAddress, host: str | None = None) -> None:
    """Raise ConnectorError(name="connection") for a cloud-metadata or link-local address (the
    check that applies to allowed hosts too)."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0] if isinstance(ip, str) else ip)
    except ValueError:
        raise _blocked(ip, "not an IP address", host) from None
    forbidden = never_allowed(address)
    if forbidden:
        raise _forbidden(address, forbidden, host)


def host_allowed(host: str, port: int | None, allowed_hosts: Iterable[str]) -> bool:
    """True when ``host`` or ``host:port`` is listed (case-insensitive)."""
    allowed = {h.strip().lower().strip("[]") for h in allowed_hosts if h and h.strip()}
    name = host.lower().strip("[]").rstrip(".")
    return name in allowed or f"{name}:{port}" in allowed


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the operating system's resolver gives for ``host`` (blocking)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """AnyIO network backend that only connects to checked (or explicitly allowed) addresses.

    ``resolver`` (host, port) -> addresses and ``inner`` (the backend that opens the checked
    address) default to the system's; tests pass their own to play DNS rebinding.
    """

    def __init__(self, allowed_hosts: Iterable[str] = (), *, resolver: Resolver | None = None,
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.allowed_hosts = tuple(allowed_hosts)
        self._resolver = resolver or system_resolver
        self._inner = inner or AnyIOBackend()

    async def resolve(self, host: str, port: int, timeout: float | None) -> list[str]:
        """Resolve ``host`` and check every address; returns the addresses to try."""
        try:
            with anyio.fail_after(timeout):
                found = await anyio.to_thread.run_sync(lambda: self._resolver(host, port))
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve host {host}: {exc}") from None
        addresses = list(dict.fromkeys(found))
        allowed = host_allowed(host, port, self.allowed_hosts)
        for address in addresses:
            if allowed:
                check_never_allowed(address, host)
            else:
                check_address(address, host)
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        last: Exception | None = None
        for address in await self.resolve(host, port, timeout):
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        raise last or httpcore.ConnectError(f"no address for {host}")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Iterable[typing.Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise ConnectorError("connection", "unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def guarded_transport(allowed_hosts: Iterable[str] = (), *, resolver: Resolver | None = None,
                      inner: httpcore.AsyncNetworkBackend | None = None) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose every TCP connection goes through GuardedBackend."""
    transport = httpx.AsyncHTTPTransport(verify=_ssl_context(), retries=0)
    backend = GuardedBackend(allowed_hosts, resolver=resolver, inner=inner)
    transport._pool._network_backend = backend  # httpx has no public hook
    return transport
