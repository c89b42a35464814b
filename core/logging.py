import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.http import StreamingHttpResponse

from .context import current_request_id, current_tenant

logger = logging.getLogger(__name__)


class ContextFilter(logging.Filter):
    """Stamps every log record with the tenant schema and request id of the current context."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.tenant = current_tenant.get()
        record.request_id = current_request_id.get()
        return True


class RefusedRequestFilter(logging.Filter):
    """On `django.request`: drops the per-response line of a request that was shed (429, or 503 with Retry-After).
    core.ratelimit.RateLimitHeadersMiddleware marks such requests (`refusal_reason`) and logs them in summaries,
    so a client retrying without backing off does not write a WARNING line per refusal."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        return getattr(request, "refusal_reason", None) is None


def stream_in_log_context(response: StreamingHttpResponse) -> None:
    """A streamed body is produced after the middleware returned, by the server's event loop (ASGI) or whoever
    iterates it (WSGI): its log lines keep the request's tenant and request id. An exception while streaming is
    logged here, with them, and ends the body: the status line has gone, and raised on, it would reach the server,
    which logs it under its own context and leaves the client waiting."""
    labels = (current_tenant.get(), current_request_id.get())
    content: Any = response.streaming_content
    if response.is_async:
        response.streaming_content = _async_in_context(content, labels)
    else:
        response.streaming_content = _sync_in_context(content, labels)


def _sync_in_context(content: Iterator[bytes], labels: tuple[str, str]) -> Iterator[bytes]:
    iterator = iter(content)
    while True:
        tenant, request_id = current_tenant.set(labels[0]), current_request_id.set(labels[1])
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        except Exception:
            logger.exception("The response failed while streaming; its body ends here.")
            return
        finally:
            current_request_id.reset(request_id)
            current_tenant.reset(tenant)
        yield chunk


async def _async_in_context(content: AsyncIterator[bytes], labels: tuple[str, str]) -> AsyncIterator[bytes]:
    iterator = aiter(content)
    while True:
        tenant, request_id = current_tenant.set(labels[0]), current_request_id.set(labels[1])
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except Exception:
            logger.exception("The response failed while streaming; its body ends here.")
            return
        finally:
            current_request_id.reset(request_id)
            current_tenant.reset(tenant)
        yield chunk
