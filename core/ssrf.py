"""Outbound HTTP that cannot be turned against our own network (SSRF guard).

Used by URL sources (knowledge), webhooks and agent tools:

    check_url(url)                       # raises UnsafeURL, returns the resolved addresses
    response = safe_get(url, max_bytes=10_000_000)

Rules: http/https only; every address the host resolves to must be public (not private, loopback,
link-local, cloud metadata, multicast, reserved, CGNAT...) unless it falls in a network an
administrator listed in settings.SSRF_ALLOWED_NETWORKS. The connection goes to the address we
checked (no second DNS lookup, so DNS rebinding cannot swap it) and every redirect hop is checked again.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
import httpx2  # the HTTP client of the openai and anthropic SDKs
from django.conf import settings

from .errors import DomainError, ErrorCode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_REDIRECTS = 5
# Not covered by `is_global == False` in every Python version: keep explicit.
_ALWAYS_BLOCKED = [
    ipaddress.ip_network("169.254.169.254/32"),  # cloud metadata (AWS, GCP, Azure)
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT
]


class UnsafeURL(DomainError):
    code = ErrorCode.UNSAFE_URL
    status = 400


class FetchFailed(DomainError):
    code = ErrorCode.FETCH_FAILED
    status = 502


@dataclass
class FetchedPage:
    url: str
    status_code: int
    content_type: str
    content: bytes


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in getattr(settings, "SSRF_ALLOWED_NETWORKS", [])]


# IPv6 ranges whose addresses stand for an IPv4 address (a translator or the stack itself maps them): judged
# as that IPv4 address. ::ffff:127.0.0.1 is loopback; 64:ff9b::a00:1 is 10.0.0.1 behind a NAT64 gateway.
_IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated, but some stacks still map it
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
# Local-use NAT64 (RFC 8215) translates into whatever network the operator's own gateway serves: never public.
_NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
# ISATAP interface identifiers (RFC 5214): ::0:5efe:a.b.c.d and ::200:5efe:a.b.c.d under any prefix.
_ISATAP_IDENTIFIERS = (0x00005EFE, 0x02005EFE)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a tunnelling IPv6 address carries (6to4, Teredo, ISATAP): traffic to it ends up there,
    so each must pass the IPv4 rules as well."""
    found = []
    if ip.sixtofour is not None:  # 2002:AABB:CCDD::/48
        found.append(ip.sixtofour)
    if ip.teredo is not None:  # 2001:0::/32: (server, client); Python undoes the client's XOR obfuscation
        found.extend(ip.teredo)
    if (int(ip) >> 32) & 0xFFFFFFFF in _ISATAP_IDENTIFIERS:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def ipv4_equivalent(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, IPv4-compatible or NAT64 address stands for, if it is one."""
    if ip in _IPV4_MAPPED or ip in _NAT64_WELL_KNOWN or (ip in _IPV4_COMPATIBLE and int(ip) > 1):  # not :: or ::1
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _judged_address(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        return ipv4_equivalent(ip) or ip
    return ip


def _is_public(ip: IPAddress) -> bool:
    if any(ip in net for net in _ALWAYS_BLOCKED):
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def address_is_public(ip: IPAddress) -> bool:
    ip = _judged_address(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        return _is_public(ip)
    if ip in _NAT64_LOCAL_USE:
        return False
    return _is_public(ip) and all(_is_public(inner) for inner in embedded_ipv4(ip))


def address_is_allowed(ip: IPAddress) -> bool:
    """Public, or in a network the operator listed (an address standing for an IPv4 one is matched as that)."""
    if address_is_public(ip):
        return True
    judged = _judged_address(ip)
    return any(judged in net for net in _allowed_networks() if judged.version == net.version)


def _host_and_port(url: str, field: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("Only http and https URLs can be fetched.", field=field)
    host = parts.hostname
    if not host:
        raise UnsafeURL("The URL has no host.", field=field)
    try:
        return host, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeURL("The URL has an invalid port.", field=field) from exc


def _allowed_addresses(host: str, infos: list[Any], field: str) -> list[IPAddress]:
    addresses = []
    for info in infos:
        # An AF_INET/AF_INET6 sockaddr starts with the address text; typeshed's union also has AF_UNIX-style tuples.
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address_is_allowed(ip):
            raise UnsafeURL(
                f"The host {host!r} is or resolves to a private or internal address ({ip}); "
                "an administrator must allow that network explicitly.",
                field=field,
            )
        addresses.append(ip)
    return addresses


def check_url(url: str, *, field: str = "url") -> list[IPAddress]:
    """Validate scheme and host and resolve it; raise UnsafeURL unless every address is allowed."""
    host, port = _host_and_port(url, field)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURL(f"The host {host!r} does not resolve.", field=field) from exc
    addresses = _allowed_addresses(host, infos, field)
    if not addresses:
        raise UnsafeURL(f"The host {host!r} does not resolve.", field=field)
    return addresses


def refuse_internal_host(host: str, *, field: str, port: int = 443) -> None:
    """Save-time check of a host a tenant configures: UnsafeURL (400 on `field`) if it is, or resolves to, an
    address outbound requests may not reach. A name that does not resolve (yet) is accepted, since a service may
    be registered before its DNS exists: every request checks again before it connects."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return
    _allowed_addresses(host, infos, field)


def refuse_internal_url(url: str, *, field: str) -> None:
    """refuse_internal_host for the host of a URL (provider base URLs, custom tool servers), scheme checked."""
    host, port = _host_and_port(url, field)
    refuse_internal_host(host, field=field, port=port)


@dataclass(frozen=True)
class PinnedTarget:
    url: str  # the URL with the approved address in place of the host name
    host_header: str  # what the server must still see in Host
    server_name: str  # TLS server name (SNI and certificate check)


def pin_url(url: str, ip: IPAddress) -> PinnedTarget:
    """Where to connect so that the request goes to the address check_url approved (no second DNS lookup, so
    DNS rebinding cannot swap it) while the server still sees its own name."""
    parts = urlsplit(url)
    hostname = parts.hostname
    if hostname is None:  # check_url refuses such a URL before anything is pinned
        raise UnsafeURL("The URL has no host.", field="url")
    netloc = f"[{ip}]" if ip.version == 6 else str(ip)
    if parts.port:
        netloc += f":{parts.port}"
    host_header = hostname if not parts.port else f"{hostname}:{parts.port}"
    return PinnedTarget(
        url=urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
        host_header=host_header,
        server_name=hostname,
    )


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process. Building one loads the CA bundle (~50 ms on our 2-core machines),
    which every new HTTP client would otherwise pay; LLM provider clients are made per run."""
    return httpx2.create_ssl_context()


class PinnedAsyncTransport(httpx2.AsyncHTTPTransport):
    """An httpx transport that applies the SSRF rules to every request it sends (redirect hops included) and
    connects to the address it approved, keeping the Host header and TLS server name: no second DNS lookup,
    so DNS rebinding cannot swap the target between the check and the connection. For SDK clients
    (openai, anthropic: both on httpx2) that build their own requests: `DefaultAsyncHttpxClient(transport=...)`."""

    def __init__(self, **kwargs: Any) -> None:  # the rest of httpx2.AsyncHTTPTransport's options
        super().__init__(verify=tls_context(), trust_env=False, **kwargs)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url, host = str(request.url), request.url.host
        try:
            ipaddress.ip_address(host)
            literal = True  # nothing to resolve: checked inline, no thread hop
        except ValueError:
            literal = False
        try:
            addresses = check_url(url) if literal else await asyncio.to_thread(check_url, url)
        except UnsafeURL as exc:
            raise httpx2.ConnectError(exc.message, request=request) from exc
        target = pin_url(url, addresses[0])  # the Host header the client set stays as it is
        request.url = httpx2.URL(target.url)
        request.extensions = {**request.extensions, "sni_hostname": target.server_name}
        return await super().handle_async_request(request)


def _pinned_request(client: httpx.Client, url: str, ip: IPAddress, headers: dict[str, str]) -> httpx.Response:
    """Connect to the checked address while keeping the real Host header and TLS server name."""
    target = pin_url(url, ip)
    request = client.build_request(
        "GET",
        target.url,
        headers={**headers, "Host": target.host_header},
        extensions={"sni_hostname": target.server_name},
    )
    return client.send(request, stream=True)


def safe_get(url: str, *, max_bytes: int, timeout: float = 15.0, headers: dict[str, str] | None = None) -> FetchedPage:
    """GET one URL with the SSRF rules, following up to MAX_REDIRECTS checked redirects.

    Bodies over `max_bytes` are refused while streaming (FetchFailed)."""
    headers = {"User-Agent": "Agentry/1.0 (+knowledge ingestion)", **(headers or {})}
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False, verify=tls_context()) as client:
        for _ in range(MAX_REDIRECTS + 1):
            ip = check_url(url)[0]
            try:
                response = _pinned_request(client, url, ip, headers)
            except httpx.HTTPError as exc:
                raise FetchFailed(f"Could not fetch {url}: {exc.__class__.__name__}.") from exc
            try:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    url = urljoin(url, location)
                    continue
                if response.status_code >= 400:
                    raise FetchFailed(f"{url} answered HTTP {response.status_code}.")
                declared = int(response.headers.get("content-length") or 0)
                if declared > max_bytes:
                    raise FetchFailed(f"{url} is larger than the limit of {max_bytes} bytes.")
                body = bytearray()
                for piece in response.iter_bytes():
                    body.extend(piece)
                    if len(body) > max_bytes:
                        raise FetchFailed(f"{url} is larger than the limit of {max_bytes} bytes.")
                return FetchedPage(
                    url=url,
                    status_code=response.status_code,
                    content_type=response.headers.get("content-type", ""),
                    content=bytes(body),
                )
            except httpx.HTTPError as exc:
                raise FetchFailed(f"Could not fetch {url}: {exc.__class__.__name__}.") from exc
            finally:
                response.close()
    raise FetchFailed(f"Too many redirects from {url}.")
