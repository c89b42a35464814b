"""Outgoing HTTP for tools: SSRF-guarded (core.ssrf rules), pinned to the checked address, size- and time-limited."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

from core.errors import ErrorCode
from core.ssrf import UnsafeURL, check_url, pin_url, tls_context

from .base import ToolError


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: str
    truncated: bool


async def guarded_request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
    params: dict[str, Any] | None = None,
    timeout: float = 10.0,
    max_bytes: int | None = None,
) -> HttpResult:
    max_bytes = max_bytes or settings.AGENTS_TOOL_MAX_RESPONSE_BYTES
    try:
        addresses = await asyncio.to_thread(check_url, url)
    except UnsafeURL as exc:
        raise ToolError(exc.message, code=ErrorCode.UNSAFE_URL) from exc
    target = pin_url(url, addresses[0])
    send_headers = {"User-Agent": "Agentry-Agent/1.0", **(headers or {}), "Host": target.host_header}
    try:
        async with httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, trust_env=False, verify=tls_context()
        ) as client:
            request = client.build_request(
                method.upper(),
                target.url,
                headers=send_headers,
                params=params,
                content=json.dumps(json_body).encode() if json_body is not None else None,
                extensions={"sni_hostname": target.server_name},
            )
            if json_body is not None:
                request.headers["Content-Type"] = "application/json"
            response = await client.send(request, stream=True)
            try:
                body = bytearray()
                truncated = False
                async for piece in response.aiter_bytes():
                    body.extend(piece)
                    if len(body) > max_bytes:
                        # Stop reading: a 10 MB answer must not fill the worker's memory or the model's context.
                        truncated = True
                        del body[max_bytes:]
                        break
            finally:
                await response.aclose()
    except httpx.TimeoutException as exc:
        raise ToolError(
            f"{target.server_name} did not answer within {timeout:g} s.", code=ErrorCode.TOOL_TIMEOUT
        ) from exc
    except httpx.HTTPError as exc:
        raise ToolError(
            f"Request to {target.server_name} failed: {exc.__class__.__name__}.", code=ErrorCode.HTTP_FAILED
        ) from exc
    return HttpResult(
        status=response.status_code,
        headers={k: v for k, v in response.headers.items() if k.lower() in ("content-type", "content-length")},
        body=body.decode("utf-8", errors="replace"),
        truncated=truncated,
    )
