"""Custom HTTP tools from an OpenAPI 3 document, and integration templates that produce one.

Each operation becomes a tool `<custom tool name>__<operationId>` whose JSON-schema parameters are the
operation's path/query parameters plus `body` (the JSON request body). Secrets (headers such as Authorization,
or a secret base URL like a Slack webhook) are stored encrypted and merged in only when the request is sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from core.errors import ErrorCode, InvalidInput

from .base import Tool, ToolContext, ToolError
from .http import guarded_request

METHODS = ("get", "post", "put", "patch", "delete")
_NAME = re.compile(r"[^a-zA-Z0-9_-]")


def _operation_name(tool_name: str, method: str, path: str, op: dict) -> str:
    op_id = op.get("operation_id") or op.get("operationId") or f"{method}_{path}"
    return _NAME.sub("_", f"{tool_name}__{op_id}")[:64]


def openapi_operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate the parts we use and list operations; raise InvalidInput with a clear message."""
    if not isinstance(document, dict) or not str(document.get("openapi", "")).startswith("3"):
        raise InvalidInput("The document must be an OpenAPI 3 object (with an 'openapi: 3.x' field).", field="openapi")
    paths = document.get("paths")
    if not isinstance(paths, dict) or not paths:
        raise InvalidInput("The OpenAPI document defines no paths.", field="openapi")
    operations = []
    for path, item in paths.items():
        for method in METHODS:
            op = (item or {}).get(method)
            if not isinstance(op, dict):
                continue
            properties: dict[str, Any] = {}
            required: list[str] = []
            locations: dict[str, str] = {}
            for param in op.get("parameters", []) or []:
                if param.get("in") not in ("path", "query"):
                    continue
                properties[param["name"]] = param.get("schema") or {"type": "string"}
                locations[param["name"]] = param["in"]
                if param.get("required") or param.get("in") == "path":
                    required.append(param["name"])
            body = ((op.get("requestBody") or {}).get("content") or {}).get("application/json")
            if body is not None:
                properties["body"] = body.get("schema") or {"type": "object"}
                if (op.get("requestBody") or {}).get("required"):
                    required.append("body")
            operations.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "operation_id": op.get("operationId", ""),
                    "description": op.get("summary") or op.get("description") or f"{method.upper()} {path}",
                    "parameters": {"type": "object", "properties": properties, "required": required},
                    "locations": locations,
                }
            )
    if not operations:
        raise InvalidInput("The OpenAPI document has no GET/POST/PUT/PATCH/DELETE operations.", field="openapi")
    return operations


class OpenAPIOperationTool(Tool):
    timeout = 15.0

    def __init__(self, *, tool_name: str, base_url: str, operation: dict[str, Any], secrets: dict[str, Any]):
        super().__init__()
        self.name = _operation_name(tool_name, operation["method"].lower(), operation["path"], operation)
        self.description = operation["description"][:500]
        self.parameters = operation["parameters"]
        self.operation = operation
        self.base_url = (secrets.get("base_url") or base_url).rstrip("/")
        self.secrets = secrets

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        path = self.operation["path"]
        query: dict[str, Any] = dict(self.secrets.get("query") or {})
        for name, where in self.operation["locations"].items():
            if name not in arguments:
                continue
            if where == "path":
                path = path.replace("{" + name + "}", quote(str(arguments[name]), safe=""))
            else:
                query[name] = arguments[name]
        if "{" in path:
            raise ToolError(f"Missing path parameter in {path}.", code=ErrorCode.INVALID_ARGUMENTS)
        url = self.base_url + (path if path != "/" or not self.secrets.get("base_url") else "")
        result = await guarded_request(
            self.operation["method"],
            url,
            headers=dict(self.secrets.get("headers") or {}),
            params=query or None,
            json_body=arguments.get("body"),
            timeout=self.timeout - 1,
        )
        return {"status": result.status, "body": result.body, "truncated": result.truncated}


def tools_for_custom(custom_tool, secrets: dict[str, Any]) -> list[Tool]:
    document = custom_tool.openapi
    servers = document.get("servers") or [{}]
    base_url = servers[0].get("url", "")
    return [
        OpenAPIOperationTool(tool_name=custom_tool.name, base_url=base_url, operation=op, secrets=secrets)
        for op in openapi_operations(document)
    ]


# --- Integration templates -----------------------------------------------------------------------


def slack_webhook_template(*, webhook_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Slack incoming webhook: the whole URL is the secret, so it is stored encrypted, not in the document."""
    if not webhook_url.startswith("https://"):
        raise InvalidInput("A Slack incoming-webhook URL starts with https://hooks.slack.com/...", field="webhook_url")
    document = {
        "openapi": "3.0.3",
        "info": {"title": "Slack incoming webhook", "version": "1"},
        "servers": [{"url": "https://hooks.slack.com"}],
        "paths": {
            "/": {
                "post": {
                    "operationId": "post_message",
                    "summary": "Post a message to the Slack channel of this webhook.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 4000}},
                                    "required": ["text"],
                                }
                            }
                        },
                    },
                }
            }
        },
    }
    return document, {"base_url": webhook_url}


def rest_template(
    *, base_url: str, operations: list[dict[str, Any]], auth_header: str = "", auth_value: str = ""
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generic REST API: a base URL, an optional auth header (secret), and simple operations
    [{"name", "method", "path", "description", "query": [names], "body": bool}]."""
    if not base_url.startswith(("http://", "https://")):
        raise InvalidInput("The base URL must start with http:// or https://.", field="base_url")
    paths: dict[str, Any] = {}
    for op in operations or []:
        method = str(op.get("method", "get")).lower()
        if method not in METHODS or not op.get("name") or not str(op.get("path", "")).startswith("/"):
            raise InvalidInput(
                "Each operation needs a name, a method and a path starting with '/'.", field="operations"
            )
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in re.findall(r"{(\w+)}", op["path"])
        ]
        params += [{"name": n, "in": "query", "schema": {"type": "string"}} for n in op.get("query", [])]
        spec: dict[str, Any] = {"operationId": op["name"], "summary": op.get("description", ""), "parameters": params}
        if op.get("body"):
            spec["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
        paths.setdefault(op["path"], {})[method] = spec
    document = {
        "openapi": "3.0.3",
        "info": {"title": "REST API", "version": "1"},
        "servers": [{"url": base_url}],
        "paths": paths,
    }
    secrets = {"headers": {auth_header: auth_value}} if auth_header and auth_value else {}
    return document, secrets


# name -> builder(**params) -> (OpenAPI document, secrets)
TEMPLATES: dict[str, Callable[..., tuple[dict[str, Any], dict[str, Any]]]] = {
    "slack_webhook": slack_webhook_template,
    "rest": rest_template,
}
