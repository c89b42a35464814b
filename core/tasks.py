from django.db import connection

from config.celery import app


@app.task(name="core.tenant_probe", ignore_result=False)  # tests read the result
def tenant_probe_task() -> dict:
    """Reports the schema the worker ran this task in (used by readiness checks and tests)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        (schema,) = cursor.fetchone()
    tenant = getattr(connection, "tenant", None)
    return {"schema": schema, "tenant": getattr(tenant, "slug", None)}
