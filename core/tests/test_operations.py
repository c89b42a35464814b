import json
import logging

import pytest
from django.test import Client
from pythonjsonlogger.json import JsonFormatter

from core.logging import ContextFilter


@pytest.mark.django_db
def test_request_id_is_generated_or_echoed(client_a):
    generated = client_a.get("/healthz")
    assert len(generated["X-Request-ID"]) == 32
    echoed = client_a.get("/healthz", HTTP_X_REQUEST_ID="trace-abc-123")
    assert echoed["X-Request-ID"] == "trace-abc-123"


@pytest.mark.django_db
def test_log_lines_are_json_with_tenant_and_request_id(client_a, admin_a):
    records: list[str] = []
    formatter = JsonFormatter("%(levelname)s %(name)s %(message)s %(tenant)s %(request_id)s")

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Capture()
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("agentry.test.view")

    # A view-level log line emitted while the request is being handled carries its context.
    from accounts import apis

    original_get = apis.MeApi.get

    def logged_get(self, request):
        logger.warning("serving me")
        return original_get(self, request)

    logger.addHandler(handler)
    apis.MeApi.get = logged_get
    try:
        client_a.force_login(admin_a)
        client_a.get("/api/v1/me/", HTTP_X_REQUEST_ID="req-42")
    finally:
        apis.MeApi.get = original_get
        logger.removeHandler(handler)

    line = json.loads(records[-1])
    assert line["message"] == "serving me"
    assert line["tenant"] == "t_acme"
    assert line["request_id"] == "req-42"


@pytest.mark.django_db
def test_django_admin_is_public_schema_only_and_staff_only(admin_a, client_a):
    public = Client(HTTP_HOST="localhost")
    public.force_login(admin_a)  # a tenant admin is not platform staff
    assert public.get("/admin/").status_code == 302
    admin_a.is_staff = True
    admin_a.save()
    assert public.get("/admin/").status_code == 200
    client_a.force_login(admin_a)
    assert client_a.get("/admin/").status_code == 404  # never on tenant hosts
