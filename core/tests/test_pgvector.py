import pytest
from django.db import connection
from django_tenants.utils import tenant_context


def _store_and_query(tenant, vectors):
    with tenant_context(tenant), connection.cursor() as cursor:
        cursor.execute("CREATE TABLE probe_vectors (id serial PRIMARY KEY, label text, embedding vector(3))")
        for label, vec in vectors:
            cursor.execute("INSERT INTO probe_vectors (label, embedding) VALUES (%s, %s::vector)", [label, str(vec)])
        cursor.execute("CREATE INDEX ON probe_vectors USING hnsw (embedding vector_cosine_ops)")
        cursor.execute("SELECT label FROM probe_vectors ORDER BY embedding <=> '[1,0,0]'::vector LIMIT 1")
        nearest = cursor.fetchone()[0]
        cursor.execute("SELECT count(*), current_schema() FROM probe_vectors")
        count, schema = cursor.fetchone()
    return nearest, count, schema


@pytest.mark.django_db
def test_vectors_work_in_two_tenant_schemas_and_stay_apart(tenant_a, tenant_b):
    a = _store_and_query(tenant_a, [("a-x", [0.9, 0.1, 0]), ("a-y", [0, 1, 0])])
    b = _store_and_query(tenant_b, [("b-z", [0, 0, 1]), ("b-x", [1, 0.2, 0]), ("b-y", [0, 1, 0.1])])
    assert a == ("a-x", 2, "t_acme")
    assert b == ("b-x", 3, "t_globex")
    # The extension lives once, outside every tenant schema.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE extname='vector'"
        )
        assert cursor.fetchone()[0] == "extensions"
