"""What the usage API reads: query parameters, validated before they reach a query."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

BIGINT_MAX = 2**63 - 1  # ids are PostgreSQL bigints: a larger number is no id, not a database error


class AuditListQuerySerializer(serializers.Serializer[dict[str, Any]]):
    """GET /audit/ query parameters (blank ones count as absent)."""

    action = serializers.CharField(required=False, max_length=100, help_text="Actions starting with this.")
    actor = serializers.IntegerField(required=False, min_value=1, max_value=BIGINT_MAX, help_text="The acting user.")
    target_type = serializers.CharField(required=False, max_length=100)
    target_id = serializers.CharField(required=False, max_length=200)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    before_id = serializers.IntegerField(required=False, min_value=1, max_value=BIGINT_MAX, help_text="Paging.")
    limit = serializers.IntegerField(required=False, default=100, help_text="1-500 (others are brought into range).")

    @classmethod
    def from_query(cls, query_params: Any) -> AuditListQuerySerializer:
        return cls(data={name: value for name, value in query_params.items() if value != ""})
