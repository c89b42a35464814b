"""Identity and access inside one organisation (tenant schema): teams, shares, API keys, invitations.

Users and memberships live in the public schema (accounts); everything here is per tenant, so an
API key, team or invitation of one organisation does not even exist in another's schema.
"""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models

from accounts.models import Membership, Role


class ShareLevel(models.TextChoices):
    VIEWER = "viewer", "Viewer (use)"
    EDITOR = "editor", "Editor (change)"


class ApiScope(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Write"
    CHAT = "chat", "Chat"
    ADMIN = "admin", "Admin"


class IamSettings(models.Model):
    """Per-organisation access settings (a single row, pk=1)."""

    members_can_create_api_keys = models.BooleanField(
        default=False, help_text="Let non-admin members create API keys for themselves."
    )

    def __str__(self) -> str:
        return "IAM settings"


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TeamMembership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    # Users (public schema) are referenced without a database foreign key, here and below: core/models.py says why.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="iam_team_member_unique")]


class Share(models.Model):
    """A team's access to one shared resource (agent, knowledge base...), named by registry type + id.

    Organisation-wide access is the resource's own `org_access` field, not a Share row.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="shares")
    resource_type = models.CharField(max_length=32)
    resource_id = models.BigIntegerField()
    level = models.CharField(max_length=8, choices=ShareLevel.choices, default=ShareLevel.VIEWER)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "resource_type", "resource_id"], name="iam_share_unique"),
        ]
        indexes = [models.Index(fields=["resource_type", "resource_id"])]


class ApiKey(models.Model):
    """An integrator's key. Acts for `created_by`, limited to `scopes` (and to `agent_ids` unless all_agents).

    Only `prefix` (public, for lookup) and `key_hash` are stored; the full key is shown once.
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    scopes = ArrayField(models.CharField(max_length=8, choices=ApiScope.choices))
    all_agents = models.BooleanField(default=True)
    agent_ids = ArrayField(models.BigIntegerField(), default=list, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    request_count = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    # Not a column: the creator's membership, attached by iam.keys.api_key_authenticate once it looked it up.
    owner_membership: Membership | None

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class Invitation(models.Model):
    """An emailed, signed invitation to join this organisation with a role. Usable once."""

    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.USER)
    nonce = models.CharField(max_length=32, help_text="Random part of the signed token; forged ids do not match.")
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email} ({self.get_role_display()})"
