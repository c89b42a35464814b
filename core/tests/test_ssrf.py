"""SSRF guard: private/internal addresses refused after DNS resolution, redirects re-checked, size limits."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.ssrf import (
    FetchFailed,
    UnsafeURL,
    address_is_public,
    check_url,
    refuse_internal_host,
    refuse_internal_url,
    safe_get,
)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server API
        if self.path == "/redirect-internal":
            self.send_response(302)
            self.send_header("Location", "http://10.1.2.3/secret")
            self.end_headers()
            return
        if self.path == "/redirect-local":
            self.send_response(301)
            self.send_header("Location", "/page")
            self.end_headers()
            return
        body = b"<html><body><h1>Hello</h1><p>host=" + self.headers["Host"].encode() + b"</p></body></html>"
        if self.path == "/big":
            body = b"x" * 50_000
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00::1]/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
    ],
)
def test_private_loopback_link_local_and_metadata_addresses_are_refused(url):
    with pytest.raises(UnsafeURL):
        check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://[2002:7f00:1::1]/",  # 6to4 of 127.0.0.1
        "http://[2002:a00:1::1]/",  # 6to4 of 10.0.0.1
        "http://[2002:a9fe:a9fe::1]/",  # 6to4 of the metadata address
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1 (XOR-ed in the last 32 bits)
        "http://[::ffff:10.0.0.1]/",  # IPv4-mapped
        "http://[::ffff:169.254.169.254]/",
        "http://[::7f00:1]/",  # IPv4-compatible ::127.0.0.1
        "http://[::a9fe:a9fe]/",
        "http://[64:ff9b::7f00:1]/",  # NAT64 well-known prefix
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[64:ff9b:1::808:808]/",  # local-use NAT64: the operator's own translator, never public
        "http://[2a00:1450::5efe:7f00:1]/",  # ISATAP ::0:5efe:127.0.0.1
        "http://[2a00:1450::200:5efe:a00:1]/",  # ISATAP ::200:5efe:10.0.0.1
    ],
)
def test_ipv6_transition_addresses_are_judged_by_the_ipv4_address_they_embed(url):
    with pytest.raises(UnsafeURL):
        check_url(url)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8: how IPv6-only networks reach IPv4 services
        ("::808:808", True),
        ("2a00:1450::5efe:808:808", True),
        ("2002:c0a8:101::1", False),  # 192.168.1.1
        ("::", False),
        ("::1", False),
    ],
)
def test_transition_addresses_that_embed_a_public_ipv4_address_stay_usable(address, public):
    import ipaddress

    assert address_is_public(ipaddress.ip_address(address)) is public


def test_operator_allowance_covers_an_ipv4_network_written_as_ipv6_but_not_a_tunnel_to_it(settings):
    settings.SSRF_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert [str(ip) for ip in check_url("http://[::ffff:127.0.0.1]:8000/")] == ["::ffff:7f00:1"]
    with pytest.raises(UnsafeURL):
        check_url("http://[2002:7f00:1::1]/")


def test_saving_refuses_internal_targets_but_accepts_names_that_do_not_resolve_yet(settings):
    settings.SSRF_ALLOWED_NETWORKS = []
    for url in ("http://127.0.0.1:11434/v1", "http://localhost/", "http://[2002:a9fe:a9fe::1]/", "http://10.0.0.7/"):
        with pytest.raises(UnsafeURL) as refused:
            refuse_internal_url(url, field="base_url")
        assert refused.value.field == "base_url"
    with pytest.raises(UnsafeURL):
        refuse_internal_host("169.254.169.254", field="host")
    refuse_internal_url("https://no-such-host.invalid/v1", field="base_url")  # checked again at each request
    refuse_internal_url("http://93.184.216.34/", field="base_url")
    settings.SSRF_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    refuse_internal_url("http://127.0.0.1:11434/v1", field="base_url")  # the operator allowed the local network


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/", "gopher://x/", "http:///nohost"])
def test_only_http_urls_with_a_host(url):
    with pytest.raises(UnsafeURL):
        check_url(url)


def test_public_addresses_pass():
    assert [str(ip) for ip in check_url("http://93.184.216.34/page")] == ["93.184.216.34"]
    import ipaddress

    assert address_is_public(ipaddress.ip_address("8.8.8.8"))
    assert not address_is_public(ipaddress.ip_address("127.0.0.1"))


def test_admin_allowed_network_opens_only_that_network(settings, fake_server):
    with pytest.raises(UnsafeURL):
        safe_get(fake_server + "/page", max_bytes=10_000)
    settings.SSRF_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    page = safe_get(fake_server + "/page", max_bytes=10_000)
    assert page.status_code == 200 and b"<h1>Hello</h1>" in page.content
    assert b"host=127.0.0.1:" in page.content  # the Host header names the URL's host
    assert safe_get(fake_server + "/redirect-local", max_bytes=10_000).url.endswith("/page")
    with pytest.raises(UnsafeURL):  # every redirect hop is checked again, before connecting
        safe_get(fake_server + "/redirect-internal", max_bytes=10_000)
    with pytest.raises(FetchFailed):
        safe_get(fake_server + "/big", max_bytes=10_000)


def test_worker_warm_up_builds_provider_clients_on_one_shared_tls_context(settings, caplog):
    """Workers pay the CA bundle and SDK imports once at start (config.warmup); every client afterwards reuses the
    process's TLS context instead of loading the CA bundle again."""
    import logging

    from agents.providers.openai_compat import OpenAICompatProvider
    from config.warmup import warm_up
    from core.ssrf import tls_context

    settings.WORKER_PRELOAD_EMBEDDER = False
    with caplog.at_level(logging.INFO, logger="config.warmup"):
        warm_up()
    assert "worker warm-up done" in caplog.text and "failed" not in caplog.text
    client = OpenAICompatProvider(base_url="https://llm.example.com/v1", api_key="k").client
    transport = client._client._transport
    assert transport._pool._ssl_context is tls_context()
