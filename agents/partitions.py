"""Monthly partitions of the message table.

Messages grow without bound, so `agents_message` is declaratively partitioned by month on `created`: old months
can be detached or dropped as a whole, and a conversation's history reads one index of a few partitions.
A DEFAULT partition catches rows outside the prepared months so inserts never fail; `message_partitions_ensure`
(run daily by Celery beat for every tenant, and at migration time) keeps the next months prepared in advance.
"""

from __future__ import annotations

import datetime as dt
import re

import psycopg
from django.db import OperationalError, transaction
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


_MONTH_TABLE = re.compile(r"^agents_message_p(\d{4})_(\d{2})$")


def message_partitions_expired(*, cutoff: dt.datetime, connection=None) -> list[str]:
    """Month tables of this schema whose whole month ends at or before `cutoff`: attached partitions, and tables a
    previous run detached but could not drop yet."""
    connection = connection or default_connection
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r' "
            "AND relname LIKE 'agents\\_message\\_p%%' ORDER BY relname"
        )
        names = [row[0] for row in cursor.fetchall()]
    expired = []
    for name in names:
        match = _MONTH_TABLE.match(name)
        if match is None:
            continue
        month_end = _month_start(dt.date(int(match[1]), int(match[2]), 1), 1)
        if dt.datetime.combine(month_end, dt.time(), tzinfo=dt.UTC) <= cutoff:
            expired.append(name)
    return expired


def message_partition_drop(name: str, *, lock_timeout_ms: int, connection=None) -> bool:
    """Detach one month partition and drop it without holding up the writes of current months.

    DETACH ... CONCURRENTLY takes only a SHARE UPDATE EXCLUSIVE lock on the parent, which inserts do not wait
    for, but PostgreSQL allows it only outside a transaction block and when the table has no DEFAULT partition.
    Our table has one (inserts never fail for lack of a month), so the plain DETACH is used there: it needs the
    parent's ACCESS EXCLUSIVE lock for a catalog change of a few milliseconds, and we wait at most
    `lock_timeout_ms` for it (inserts queued behind us wait no longer) and otherwise leave the month for the next
    run. Inserts into the current month never touch the old partition's own lock (tuple routing opens only the
    partition it writes to), so the DROP afterwards only contends for the conversation table's foreign-key trigger
    lock, under the same time limit. Returns False when the month was left for later.
    """
    if _MONTH_TABLE.match(name) is None:
        raise ValueError(f"not a month partition: {name}")
    connection = connection or default_connection
    try:
        with connection.cursor() as cursor:
            # Every name qualified with the organisation's schema: the statements below must never resolve a name
            # through the rest of the search_path (public, extensions) or after a change of it.
            cursor.execute("SELECT quote_ident(current_schema())")
            schema = cursor.fetchone()[0]
            parent, partition = f"{schema}.agents_message", f"{schema}.{name}"
            cursor.execute(
                "SELECT i.inhdetachpending FROM pg_inherits i WHERE i.inhrelid = to_regclass(%s) "
                "AND i.inhparent = to_regclass(%s)",
                [partition, parent],
            )
            row = cursor.fetchone()
            if row is not None:  # still attached
                cursor.execute(
                    "SELECT partdefid <> 0 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", [parent]
                )
                has_default = cursor.fetchone()[0]
                if row[0]:  # an interrupted concurrent detach: finish it
                    cursor.execute(f"ALTER TABLE {parent} DETACH PARTITION {partition} FINALIZE")
                elif not has_default and not connection.in_atomic_block:
                    cursor.execute(f"ALTER TABLE {parent} DETACH PARTITION {partition} CONCURRENTLY")
                else:
                    with transaction.atomic(using=connection.alias):
                        _lock_timeout_set(cursor, lock_timeout_ms)
                        cursor.execute(f"ALTER TABLE {parent} DETACH PARTITION {partition}")
            with transaction.atomic(using=connection.alias):
                _lock_timeout_set(cursor, lock_timeout_ms)
                cursor.execute(f"DROP TABLE {partition}")
    except OperationalError as error:
        if isinstance(error.__cause__, psycopg.errors.LockNotAvailable):
            return False
        raise
    return True


def _lock_timeout_set(cursor, lock_timeout_ms: int) -> None:
    # For the enclosing transaction only, so a pooled connection does not keep it.
    cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{int(lock_timeout_ms)}ms"])
