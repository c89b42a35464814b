"""URL sources: one page fetched through the SSRF guard from a fake server on 127.0.0.1."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from knowledge import pipeline, services
from knowledge.models import Chunk, DocumentStatus

pytestmark = pytest.mark.django_db
PAGE = (
    b"<html><head><title>Pricing</title><style>p{}</style></head><body><nav>Home | About</nav><main>"
    b"<h1>Pricing</h1><p>The team plan costs 12 euros per seat per month.</p>"
    b"<h2>Discounts</h2><ul><li>Non-profits get 50 percent off.</li></ul></main></body></html>"
)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


@pytest.fixture
def page_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/pricing"
    server.shutdown()
    server.server_close()


def test_url_source_is_fetched_extracted_and_chunked(kb, admin_a, page_url, settings):
    settings.SSRF_ALLOWED_NETWORKS = ["127.0.0.1/32"]  # an admin allowed the local network explicitly
    result = services.documents_ingest(kb=kb, user=admin_a, uploads=[services.Upload(title="Pricing", url=page_url)])
    document = result.documents[0]
    assert document.source_type == "url" and document.storage_path == ""
    assert pipeline.document_process(document.id)
    document.refresh_from_db()
    assert document.status == DocumentStatus.READY, document.error
    assert document.storage_path.startswith("tenant/t_acme/kb/") and document.size_bytes == len(PAGE)
    assert document.metadata["html_title"] == "Pricing"
    text = "\n".join(Chunk.objects.filter(document=document).values_list("text", flat=True))
    assert "12 euros per seat" in text and "Pricing > Discounts" in text
    assert "Home | About" not in text


def test_url_source_refused_without_the_admin_setting(kb, admin_a, page_url):
    result = services.documents_ingest(kb=kb, user=admin_a, uploads=[services.Upload(title="Pricing", url=page_url)])
    assert result.documents == []
    assert result.errors[0]["code"] == "unsafe_url" and "private or internal" in result.errors[0]["detail"]


def test_url_source_through_an_ipv6_tunnel_to_an_allowed_network_is_still_refused(kb, admin_a, settings):
    settings.SSRF_ALLOWED_NETWORKS = ["127.0.0.1/32"]  # 127.0.0.1 itself is allowed; a 6to4 route to it is not
    result = services.documents_ingest(
        kb=kb, user=admin_a, uploads=[services.Upload(title="Tunnel", url="http://[2002:7f00:1::1]/pricing")]
    )
    assert result.documents == []
    assert result.errors[0]["code"] == "unsafe_url" and result.errors[0]["field"] == "url"
