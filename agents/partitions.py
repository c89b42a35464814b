"""Monthly partitions of the message table.

Messages grow without bound, so `agents_message` is declaratively partitioned by month on `created`: old months
can be detached or dropped as a whole, and a conversation's history reads one index of a few partitions.
A DEFAULT partition catches rows outside the prepared months so inserts never fail; `message_partitions_ensure`
(run daily by Celery beat for every tenant, and at migration time) keeps the next months prepared in advance.
"""

from __future__ import annotations

import datetime as dt

from django.db import connection as default_connection

MONTHS_AHEAD = 3

_CREATE_PARENT = """
CREATE TABLE IF NOT EXISTS agents_message (
    id bigserial NOT NULL,
    created timestamptz NOT NULL,
    conversation_id uuid NOT NULL REFERENCES agents_conversation (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    role varchar(12) NOT NULL,
    content text NOT NULL,
    citations jsonb NOT NULL,
    tool_calls jsonb NOT NULL,
    usage jsonb NOT NULL,
    latency_ms integer NULL,
    first_token_ms integer NULL,
    agent_version_id bigint NULL,
    kb_versions jsonb NOT NULL,
    status varchar(12) NOT NULL,
    error jsonb NOT NULL,
    run_id uuid NULL,
    PRIMARY KEY (id, created)
) PARTITION BY RANGE (created);
CREATE INDEX IF NOT EXISTS agents_message_conv_created ON agents_message (conversation_id, created);
CREATE INDEX IF NOT EXISTS agents_message_run ON agents_message (run_id);
CREATE TABLE IF NOT EXISTS agents_message_default PARTITION OF agents_message DEFAULT;
"""


def _month_start(day: dt.date, offset: int) -> dt.date:
    index = day.year * 12 + (day.month - 1) + offset
    return dt.date(index // 12, index % 12 + 1, 1)


def partition_name(month: dt.date) -> str:
    return f"agents_message_p{month.year:04d}_{month.month:02d}"


def message_table_create(connection=None) -> None:
    connection = connection or default_connection
    with connection.cursor() as cursor:
        cursor.execute(_CREATE_PARENT)
    message_partitions_ensure(connection=connection, months_back=1)


def message_partitions_ensure(
    *, connection=None, months_ahead: int = MONTHS_AHEAD, months_back: int = 0, today: dt.date | None = None
) -> list[str]:
    """Create the monthly partitions from `months_back` before this month to `months_ahead` after it.

    Rows that already landed in the DEFAULT partition for a month are moved into the new partition in the same
    transaction (PostgreSQL refuses to attach a range the default partition already holds rows of).
    """
    connection = connection or default_connection
    today = today or dt.datetime.now(dt.UTC).date()
    created: list[str] = []
    with connection.cursor() as cursor:
        for offset in range(-months_back, months_ahead + 1):
            start, end = _month_start(today, offset), _month_start(today, offset + 1)
            name = partition_name(start)
            cursor.execute("SELECT to_regclass(%s)", [name])
            if cursor.fetchone()[0] is not None:
                continue
            bounds = f"FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            cursor.execute(
                f"CREATE TABLE {name} (LIKE agents_message INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"  # noqa: S608
            )
            cursor.execute(
                f"WITH moved AS (DELETE FROM agents_message_default WHERE created >= %s AND created < %s "  # noqa: S608
                f"RETURNING *) INSERT INTO {name} SELECT * FROM moved",
                [start, end],
            )
            cursor.execute(f"ALTER TABLE agents_message ATTACH PARTITION {name} FOR VALUES {bounds}")
            created.append(name)
    return created


def message_partitions_list(connection=None) -> list[str]:
    connection = connection or default_connection
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass('agents_message') ORDER BY c.relname"
        )
        return [row[0] for row in cursor.fetchall()]
