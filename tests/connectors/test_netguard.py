"""SSRF guard: address classes, allowed hosts, pinning against DNS rebinding (a resolver that
changes its answer, real TCP connections), redirects re-checked over real HTTP."""
from collections.abc import Iterator

import httpcore
import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from httpcore._backends.anyio import AnyIOBackend
from pydantic import ValidationError

from api.routes.tenants import TenantSettingsPatch
from connectors.errors import ConnectorError
from connectors.executor import execute_http
from connectors.netguard import check_address, check_never_allowed, guarded_transport, host_allowed
from demo.server import ThreadedServer

BLOCKED = [
    "127.0.0.1", "127.8.9.10", "::1",                    # loopback
    "10.1.2.3", "172.16.0.1", "192.168.1.1", "fd00::1",  # private
    "169.254.169.254", "fe80::1",                        # link-local (cloud metadata)
    "100.64.0.1", "100.127.255.254",                     # carrier-grade NAT
    "::ffff:127.0.0.1", "::ffff:10.0.0.1",               # IPv4-mapped IPv6
    "0.0.0.0", "::",                                      # unspecified
    "224.0.0.1", "ff02::1",                              # multicast
    "240.0.0.1",                                         # reserved
    "fec0::1",                                           # site-local
    "2002:7f00:1::",                                     # 6to4 of 127.0.0.1
    "192.0.2.10",                                        # documentation, not global
]


@pytest.mark.parametrize("ip", BLOCKED)
def test_internal_addresses_blocked(ip: str) -> None:
    with pytest.raises(ConnectorError) as info:
        check_address(ip)
    assert info.value.name == "connection"
    assert "internal address" in info.value.message and "allowed_hosts" in info.value.message


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "100.128.0.1"])
def test_public_addresses_pass(ip: str) -> None:
    check_address(ip)


def test_host_allowed_by_name_or_name_port() -> None:
    assert host_allowed("LocalHost", 80, ["localhost"])
    assert host_allowed("localhost", 8080, ["localhost:8080"])
    assert not host_allowed("localhost", 8081, ["localhost:8080"])
    assert not host_allowed("evil.example", 80, [])


async def _get(url: str, allowed: list[str], **extra):
    return await execute_http({"method": "GET", "url": url, **extra}, scope={}, secrets={}, timeout=5,
                              allowed_hosts=allowed)


async def test_loopback_blocked_unless_allowed(shop) -> None:
    with pytest.raises(ConnectorError) as info:
        await _get(shop.url + "/_control/echo", [])
    assert info.value.name == "connection" and "blocked" in info.value.message
    assert shop.app.state.shop.requests["echo"] == 0  # never connected
    ok = await _get(shop.url + "/_control/echo", ["127.0.0.1"])
    assert ok.status == 200 and ok.result["path"] == "/_control/echo"
    ok = await _get(shop.url + "/_control/echo", [f"127.0.0.1:{shop.port}"])
    assert ok.status == 200
    with pytest.raises(ConnectorError):
        await _get(shop.url + "/_control/echo", ["127.0.0.1:1"])


async def test_hostname_resolving_to_loopback_blocked(shop) -> None:
    with pytest.raises(ConnectorError, match="internal address 'localhost'"):
        await _get(f"http://localhost:{shop.port}/_control/echo", ["127.0.0.1"])


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://localhost:{port}/_control/echo"])
async def test_redirect_to_blocked_address_rejected(shop, target: str) -> None:
    to = target.format(port=shop.port)
    with pytest.raises(ConnectorError) as info:
        await _get(shop.url + "/_control/redirect", ["127.0.0.1"], query={"to": to})
    assert info.value.name == "connection" and "blocked" in info.value.message
    assert shop.app.state.shop.requests["redirect"] == 1


async def test_redirects_followed_and_capped(shop) -> None:
    ok = await _get(shop.url + "/_control/redirect", ["127.0.0.1"],
                    query={"to": "/_control/echo?x=1", "hops": 4})
    assert ok.result["query"] == {"x": "1"}
    with pytest.raises(ConnectorError) as info:
        await _get(shop.url + "/_control/redirect", ["127.0.0.1"], query={"to": "/_control/echo", "hops": 5})
    assert info.value.name == "connector" and "redirects" in info.value.message


async def test_cross_origin_redirect_drops_credentials(shop) -> None:
    to = f"http://localhost:{shop.port}/_control/echo"
    result = await execute_http(
        {"url": shop.url + "/_control/redirect", "query": {"to": to},
         "auth": {"type": "bearer", "token": "{{ secrets.tok }}"}},
        scope={}, secrets={"tok": "secret-token-1"}, timeout=5, allowed_hosts=["127.0.0.1", "localhost"])
    assert "authorization" not in result.result["headers"]
    same = await execute_http(
        {"url": shop.url + "/_control/redirect", "query": {"to": "/_control/echo"},
         "auth": {"type": "bearer", "token": "{{ secrets.tok }}"}},
        scope={}, secrets={"tok": "secret-token-1"}, timeout=5, allowed_hosts=["127.0.0.1"])
    assert same.result["headers"]["authorization"] == "Bearer secret-token-1"


# ---- DNS rebinding: the connection is pinned to the address that was checked ---------------

PUBLIC = "93.184.216.34"  # a public address; the test network routes it to 127.0.0.2


class FlipResolver:
    """DNS under an attacker's control: a public address first, loopback on every later lookup."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return [PUBLIC] if len(self.calls) == 1 else ["127.0.0.1"]


class TestNetwork(httpcore.AsyncNetworkBackend):
    """Opens real TCP connections and records each target; PUBLIC is routed to 127.0.0.2 (this
    machine has no Internet), everything else goes where it is asked to."""

    __test__ = False

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []
        self._inner = AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.connects.append((host, port))
        target = "127.0.0.2" if host == PUBLIC else host
        return await self._inner.connect_tcp(target, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def named_app(name: str, hits: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/{path:path}")
    def anything(path: str) -> PlainTextResponse:
        hits.append(path)
        return PlainTextResponse(name)

    return app


@pytest.fixture
def rebind_servers() -> Iterator[tuple[int, list[str], list[str]]]:
    """An internal service on 127.0.0.1:P and the "public" site on 127.0.0.2:P (same port)."""
    internal_hits: list[str] = []
    public_hits: list[str] = []
    with ThreadedServer(named_app("internal", internal_hits)) as internal, \
            ThreadedServer(named_app("public", public_hits), host="127.0.0.2", port=internal.port):
        yield internal.port, internal_hits, public_hits


async def test_connection_pinned_to_checked_address_against_dns_rebinding(rebind_servers) -> None:
    port, internal_hits, public_hits = rebind_servers
    resolver, network = FlipResolver(), TestNetwork()
    transport = guarded_transport([], resolver=resolver, inner=network)
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        first = await client.get(f"http://rebind.test:{port}/one")
        second = await client.get(f"http://rebind.test:{port}/two")  # same pooled connection
    assert (first.text, second.text) == ("public", "public")
    assert first.request.headers["host"] == f"rebind.test:{port}"
    assert resolver.calls == ["rebind.test"]  # resolved once, for the check; never again
    assert network.connects == [(PUBLIC, port)]  # connected to the checked IP, not to the name
    assert public_hits == ["one", "two"] and internal_hits == []

    # A new connection resolves again, now to loopback: refused before connecting.
    with pytest.raises(ConnectorError) as info:
        await execute_http({"method": "GET", "url": f"http://rebind.test:{port}/three"}, scope={},
                           secrets={}, timeout=5, allowed_hosts=[],
                           transport=guarded_transport([], resolver=resolver, inner=network))
    assert info.value.name == "connection" and "'rebind.test' (127.0.0.1): loopback" in info.value.message
    assert resolver.calls == ["rebind.test", "rebind.test"]
    assert network.connects == [(PUBLIC, port)] and internal_hits == []


async def test_allowed_host_resolving_to_cloud_metadata_still_refused() -> None:
    network = TestNetwork()
    transport = guarded_transport(["metadata.internal"], resolver=lambda host, port: ["169.254.169.254"],
                                  inner=network)
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        with pytest.raises(ConnectorError) as info:
            await client.get("http://metadata.internal/latest/meta-data/")
    assert "169.254.169.254" in info.value.message and "never reachable" in info.value.message
    assert network.connects == []


@pytest.mark.parametrize("ip", ["169.254.169.254", "fe80::1", "fd00:ec2::254", "::ffff:169.254.169.254",
                                "100.100.100.200", "168.63.129.16"])
def test_cloud_metadata_addresses_never_allowed(ip: str) -> None:
    with pytest.raises(ConnectorError, match="never reachable"):
        check_never_allowed(ip)
    with pytest.raises(ConnectorError, match="never reachable"):
        check_address(ip)


def test_loopback_and_private_may_be_allowed() -> None:
    for ip in ("127.0.0.1", "10.0.0.5", "::1", "100.64.0.1"):
        check_never_allowed(ip)


@pytest.mark.parametrize("host", ["169.254.169.254", "169.254.169.254:80", "[fe80::1]:8080", "fe80::1",
                                  "fd00:ec2::254", "[fd00:ec2::254]", "2852039166", "0xa9fea9fe",
                                  "169.254.43518", "100.100.100.200"])
def test_tenant_allowed_hosts_refuse_cloud_metadata(host: str) -> None:
    with pytest.raises(ValidationError, match="never reachable"):
        TenantSettingsPatch(allowed_hosts=["shop.internal", host])


def test_tenant_allowed_hosts_accept_internal_hosts() -> None:
    hosts = ["shop.internal", "127.0.0.1:9000", "10.0.0.5", "[::1]:8080", "169-254-1-1.example.com"]
    assert TenantSettingsPatch(allowed_hosts=hosts).allowed_hosts == hosts
