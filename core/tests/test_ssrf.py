"""SSRF guard: private/internal addresses refused after DNS resolution, redirects re-checked, size limits."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.ssrf import FetchFailed, UnsafeURL, address_is_public, check_url, safe_get


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
