import logging

from .context import current_request_id, current_tenant


class ContextFilter(logging.Filter):
    """Stamps every log record with the tenant schema and request id of the current context."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.tenant = current_tenant.get()
        record.request_id = current_request_id.get()
        return True
