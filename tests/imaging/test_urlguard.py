"""The URL guard: literal spellings refused without DNS, names refused by the resolver."""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from primaa.imaging.urlguard import (
    GuardedResolver,
    UnsafeAddress,
    UnsafeUrl,
    UrlGuard,
    make_connector,
)

STRICT = UrlGuard(allow_private=False)

REFUSED_URLS = [
    "http://127.0.0.1/",
    "http://127.0.0.1./",
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://017700000001/",
    "http://0.0.0.0/",
    "http://0/",
    "http://[::]/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::127.0.0.1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[ff02::1]/",
    "http://[2002:7f00:1::]/",  # 6to4 wrapping 127.0.0.1
    "http://[2002:a9fe:a9fe::1]/",  # 6to4 wrapping 169.254.169.254
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1
    "http://[64:ff9b::a00:1]/",  # NAT64 wrapping 10.0.0.1
    "http://user:pw@127.0.0.1:8080/x",
    "https://127.0.0.1:443/",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_literal_hosts_refused_without_resolving(url: str) -> None:
    with pytest.raises(UnsafeUrl, match="refused address"):
        STRICT.check_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/a.png", "scheme must be http or https"),
        ("file:///etc/passwd", "scheme must be http or https"),
        ("gopher://example.com/", "scheme must be http or https"),
        ("/relative/path.png", "scheme must be http or https"),
        ("http:///nohost", "no host"),
        ("http://example.com:99999/", "invalid URL"),
        ("http://[::1/", "invalid URL"),
    ],
)
def test_malformed_urls_refused(url: str, message: str) -> None:
    with pytest.raises(UnsafeUrl, match=message):
        STRICT.check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://8.8.8.8/a.png",
        "https://[2606:4700::1]/a.png",
        "http://[::ffff:8.8.8.8]/",
        "http://[2002:808:808::1]/",  # 6to4 wrapping 8.8.8.8
        "https://images.example.com/slide.jpg?sig=abc",
        "http://user:pw@example.com/a.png",
        "http://134744072/",  # 8.8.8.8 spelled as one number; the resolver vets names anyway
    ],
)
def test_public_urls_allowed(url: str) -> None:
    assert STRICT.check_url(url).host


def test_refusal_message_names_the_address_and_the_spelling() -> None:
    with pytest.raises(UnsafeUrl) as info:
        STRICT.check_url("http://0x7f.1/")
    assert str(info.value).startswith("refused address 127.0.0.1 (loopback) (host '0x7f.1');")
    with pytest.raises(UnsafeUrl) as info:
        STRICT.check_url("http://[::ffff:169.254.169.254]/")
    assert "via 169.254.169.254" in str(info.value)


def test_allow_private_lets_everything_through() -> None:
    guard = UrlGuard(allow_private=True)
    for url in REFUSED_URLS:
        guard.check_url(url)


def test_allowed_networks_exempt_only_their_range() -> None:
    guard = UrlGuard(False, [ipaddress.ip_network("10.20.0.0/16"), "127.0.0.1/32"])
    guard.check_url("http://10.20.3.4/")
    guard.check_url("http://127.0.0.1:8080/")
    guard.check_url("http://[::ffff:127.0.0.1]/")
    for url in ("http://10.21.0.1/", "http://127.0.0.2/", "http://[::1]/"):
        with pytest.raises(UnsafeUrl):
            guard.check_url(url)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::1", "169.254.169.254", "100.100.100.100", "fd00::1", "0.0.0.0", "::"],
)
def test_check_address_refuses(address: str) -> None:
    with pytest.raises(UnsafeUrl):
        STRICT.check_address(address)
    with pytest.raises(UnsafeUrl):
        STRICT.check_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1", "2a00:1450::1"])
def test_check_address_allows_public(address: str) -> None:
    STRICT.check_address(address)


async def test_resolver_refuses_names_of_loopback() -> None:
    resolver = GuardedResolver(STRICT)
    with pytest.raises(UnsafeAddress, match=r"loopback.*host 'localhost'"):
        await resolver.resolve("localhost", 80, socket.AF_UNSPEC)
    await resolver.close()


async def test_resolver_refuses_decimal_spellings_via_getaddrinfo() -> None:
    """Names check_url lets through still end up at the resolver's check."""
    resolver = GuardedResolver(STRICT)
    for host in ("2130706433", "127.1", "0x7f.1"):
        with pytest.raises(UnsafeAddress):
            await resolver.resolve(host, 80)


async def test_resolver_passes_allowed_addresses() -> None:
    resolver = GuardedResolver(UrlGuard(False, ["127.0.0.0/8", "::1/128"]))
    results = await resolver.resolve("localhost", 80, socket.AF_UNSPEC)
    assert results
    assert {r["port"] for r in results} == {80}


async def test_connector_error_exposes_the_cause() -> None:
    """aiohttp wraps resolver failures; the caller can still tell a refusal apart."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", ok)
    async with TestServer(app, host="127.0.0.1") as server:
        guard = UrlGuard(allow_private=False)
        async with aiohttp.ClientSession(connector=make_connector(guard)) as session:
            with pytest.raises(aiohttp.ClientConnectorError) as info:
                await session.get(f"http://localhost:{server.port}/")
            assert isinstance(info.value.os_error, UnsafeAddress)
            assert isinstance(info.value.__cause__, UnsafeUrl)

        allowed = UrlGuard(False, ["127.0.0.0/8", "::1/128"])
        async with (
            aiohttp.ClientSession(connector=make_connector(allowed)) as session,
            session.get(f"http://localhost:{server.port}/") as resp,
        ):
            assert await resp.text() == "hello"


async def test_make_connector_refuses_a_second_resolver() -> None:
    with pytest.raises(TypeError):
        make_connector(STRICT, resolver=aiohttp.ThreadedResolver())


def test_a_refusal_says_how_to_allow_the_address() -> None:
    with pytest.raises(UnsafeUrl) as info:
        UrlGuard().check_address("127.0.0.1")
    message = str(info.value)
    assert message.startswith("refused address 127.0.0.1 (loopback)")
    assert "PRIMAA_ALLOWED_NETWORKS" in message
    assert "PRIMAA_ALLOW_PRIVATE_URLS=true" in message
