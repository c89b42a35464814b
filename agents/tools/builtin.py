"""Built-in tools: knowledge search, HTTP request to an admin-approved host, outgoing webhook."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async

from core.errors import ErrorCode
from core.tenancy import in_tenant
from knowledge.models import KnowledgeBase

from ..models import ApprovedHost
from ..retrieval import search_knowledge_bases
from .base import Tool, ToolContext, ToolError
from .http import guarded_request


class KnowledgeSearchTool(Tool):
    name = "knowledge_search"
    description = "Search the agent's knowledge bases. Returns the most relevant passages with their sources."
    parameters = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 2000},
            "top_k": {"type": "integer", "minimum": 1, "maximum": 20},
        },
        "required": ["query"],
        "additionalProperties": False,
    }
    timeout = 20.0

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        top_k = int(arguments.get("top_k") or context.retrieval.get("top_k", 5))
        hits = await sync_to_async(_search, thread_sensitive=False)(context, arguments["query"], top_k)
        return {
            "results": [
                {
                    "n": i + 1,
                    "chunk_id": h["chunk_id"],
                    "document_id": h["document_id"],
                    "document_title": h["document_title"],
                    "position": h["position"],
                    "score": round(h["score"], 4),
                    "text": h["text"],
                    "page_start": h["page_start"],
                    "page_end": h["page_end"],
                    "section_path": h["section_path"],
                }
                for i, h in enumerate(hits)
            ]
        }


def _search(context: ToolContext, query: str, top_k: int) -> list[dict]:
    with in_tenant(context.schema):
        kbs = list(KnowledgeBase.objects.filter(pk__in=context.knowledge_base_ids))
        return search_knowledge_bases(
            kbs=kbs,
            versions=context.kb_versions,
            query=query,
            top_k=top_k,
            min_score=float(context.retrieval.get("min_score", 0.0)),
        )


def _approved_hosts(schema: str) -> set[str]:
    with in_tenant(schema):
        return {h.lower() for h in ApprovedHost.objects.values_list("host", flat=True)}


class HttpRequestTool(Tool):
    name = "http_request"
    description = "Make an HTTP request to an approved host and return the status and body."
    parameters = {
        "type": "object",
        "properties": {
            "method": {"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
            "url": {"type": "string", "minLength": 8, "maxLength": 2000},
            "body": {"type": ["object", "array", "null"]},
        },
        "required": ["method", "url"],
        "additionalProperties": False,
    }
    timeout = 15.0

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        host = (urlsplit(arguments["url"]).hostname or "").lower()
        approved = await sync_to_async(_approved_hosts, thread_sensitive=False)(context.schema)
        if host not in approved:
            raise ToolError(f"The host {host!r} is not approved by an administrator.", code=ErrorCode.HOST_NOT_APPROVED)
        result = await guarded_request(
            arguments["method"], arguments["url"], json_body=arguments.get("body"), timeout=self.timeout - 1
        )
        return {"status": result.status, "body": result.body, "truncated": result.truncated}


class WebhookTool(Tool):
    """Posts a JSON payload to the URL configured on the agent (the model chooses only the payload)."""

    name = "webhook"
    description = "Send a JSON notification to the configured webhook."
    parameters = {
        "type": "object",
        "properties": {"payload": {"type": "object"}},
        "required": ["payload"],
        "additionalProperties": False,
    }
    timeout = 10.0

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        url = self.options.get("url") or context.secrets.get("webhook_url")
        if not url:
            raise ToolError("No webhook URL is configured for this agent.", code=ErrorCode.NOT_CONFIGURED)
        result = await guarded_request("POST", url, json_body=arguments["payload"], timeout=self.timeout - 1)
        return {"status": result.status, "delivered": 200 <= result.status < 300}


BUILTIN_TOOLS: list[type[Tool]] = [KnowledgeSearchTool, HttpRequestTool, WebhookTool]
