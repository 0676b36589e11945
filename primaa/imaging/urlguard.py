"""Refuse URLs and addresses that would let a client reach our own network (SSRF).

Image URLs and callback URLs come from clients; fetching them from inside the
service would otherwise let a client read cloud metadata (169.254.169.254),
admin ports on loopback, or anything on the private network. The check happens
twice: `UrlGuard.check_url` refuses IP-literal hosts at once (aiohttp does not
call the resolver for those), and `GuardedResolver` refuses host names whose
resolved addresses are unsafe. The connector connects to exactly the addresses
the resolver returned, so a name cannot resolve safely for the check and
unsafely for the connection (no DNS-rebinding window).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from typing import Any, Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

__all__ = [
    "GuardedResolver",
    "IPAddress",
    "IPNetwork",
    "UnsafeAddress",
    "UnsafeUrl",
    "UrlGuard",
    "make_connector",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeUrl(ValueError):
    """A URL or address the service refuses to connect to; the message is safe to show."""


#: How an operator allows what was refused, named in every refusal.
ALLOW_HINT = (
    "; to allow it, set PRIMAA_ALLOWED_NETWORKS to its network (e.g. 10.0.0.0/8),"
    " or PRIMAA_ALLOW_PRIVATE_URLS=true for every address"
)


class UnsafeAddress(UnsafeUrl, OSError):
    """Raised by `GuardedResolver`.

    It is also an `OSError` so that aiohttp wraps it like any resolver failure
    (`ClientConnectorDNSError`, with this exception as `os_error` and `__cause__`)
    instead of letting an unexpected exception type escape from the connector.
    """


def _nets(*specs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), why) for net, why in specs)


# An explicit table rather than `ip.is_global`: the standard library's answers
# changed between Python 3.11 and 3.13 (IPv4-mapped and 2001::/23 in particular),
# and a security check should not change meaning with the interpreter.
_BLOCKED_V4: Final = _nets(
    ("0.0.0.0/8", "unspecified / 'this network'"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local / cloud metadata"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved / broadcast"),
)
_BLOCKED_V6: Final = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "ORCHID"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing"),
    ("fc00::/7", "unique local (private)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")

# Legacy inet_aton spellings: 1 to 4 dot-separated parts, each decimal, octal
# (leading 0) or hex (0x). "127.1", "2130706433", "0x7f.1" and "0177.0.0.1" all
# mean 127.0.0.1 to getaddrinfo.
_LEGACY_PART: Final = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


def _parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Decode a host the way inet_aton would, or return None if it is a name."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_LEGACY_PART.fullmatch(p) for p in parts):
        return None
    values = []
    for part in parts:
        if part[:2].lower() == "0x":
            values.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part[0] == "0":
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for i, v in enumerate(head):
        number |= v << (24 - 8 * i)
    return ipaddress.IPv4Address(number)


def _embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address may really lead to (mapped, 6to4, Teredo, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    if ip in _NAT64:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return []


def _blocked_reason(ip: IPAddress) -> str | None:
    table = _BLOCKED_V4 if isinstance(ip, ipaddress.IPv4Address) else _BLOCKED_V6
    for net, why in table:
        if ip in net:
            return why
    return None


def _parse_networks(networks: Iterable[IPNetwork | str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(n) if isinstance(n, str) else n for n in networks)


class UrlGuard:
    """Decides which URLs and addresses outgoing requests may reach.

    `allow_private` switches the address check off (development, tests, a
    service deployed next to its image store); `allowed_networks` exempts
    specific ranges, e.g. an internal slide server, while keeping the rest.
    """

    def __init__(
        self,
        allow_private: bool = False,
        allowed_networks: Sequence[IPNetwork | str] = (),
    ) -> None:
        self.allow_private = allow_private
        self.allowed_networks = _parse_networks(allowed_networks)

    def _allowed(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.allowed_networks)

    def check_address(self, ip: IPAddress | str) -> None:
        """Raise `UnsafeUrl` unless `ip` is globally routable or explicitly allowed."""
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        if self.allow_private or self._allowed(addr):
            return
        shown = str(addr)
        # The mapped form is only a spelling of its IPv4 address; judge that one.
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            candidates: list[IPAddress] = [addr.ipv4_mapped]
        else:
            candidates = [addr, *_embedded_ipv4(addr)]
        for candidate in candidates:
            if candidate is not addr and self._allowed(candidate):
                continue
            why = _blocked_reason(candidate)
            if why is not None:
                via = "" if candidate is addr else f", via {candidate}"
                raise UnsafeUrl(f"refused address {shown} ({why}{via}){ALLOW_HINT}")

    def check_url(self, url: str | URL) -> URL:
        """Parse `url` and refuse what is unsafe without resolving anything.

        Host names are accepted here; their addresses are checked by
        `GuardedResolver` when the connection is made.
        """
        try:
            parsed = url if isinstance(url, URL) else URL(url)
            host = parsed.host
        except (ValueError, TypeError) as exc:
            raise UnsafeUrl(f"invalid URL: {exc}") from None
        if parsed.scheme not in ("http", "https"):
            scheme = parsed.scheme or "none"
            raise UnsafeUrl(f"URL scheme must be http or https, not {scheme!r}")
        if not host:
            raise UnsafeUrl("URL has no host")
        literal = _ip_literal(host)
        if literal is not None:
            try:
                self.check_address(literal)
            except UnsafeUrl as exc:
                spelled = "" if host == str(literal) else f" (host {host!r})"
                reason = str(exc).removesuffix(ALLOW_HINT)
                raise UnsafeUrl(f"{reason}{spelled}{ALLOW_HINT}") from None
        return parsed


def _ip_literal(host: str) -> IPAddress | None:
    """The address a host denotes without DNS, including legacy IPv4 spellings."""
    bare = host[:-1] if host.endswith(".") else host
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return _parse_legacy_ipv4(bare)


class GuardedResolver(AbstractResolver):
    """Resolves once with the wrapped resolver and refuses if any address is unsafe.

    Refusing when *any* address is unsafe (rather than filtering) keeps the
    behaviour predictable: a name that points at both a public and a private
    address is treated as hostile.
    """

    def __init__(self, guard: UrlGuard, inner: AbstractResolver | None = None) -> None:
        self._guard = guard
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            try:
                self._guard.check_address(result["host"])
            except UnsafeUrl as exc:
                raise UnsafeAddress(f"{exc} (host {host!r})") from None
        return results

    async def close(self) -> None:
        await self._inner.close()


def make_connector(guard: UrlGuard, **kw: Any) -> aiohttp.TCPConnector:
    """The one connector for every outgoing request (image fetches and callbacks).

    Must be called with a running event loop. Sessions using it should keep
    `trust_env=False` (the default): through a proxy, the resolver would only
    vet the proxy's address.
    """
    if "resolver" in kw:
        raise TypeError("make_connector installs its own resolver")
    return aiohttp.TCPConnector(resolver=GuardedResolver(guard), **kw)
