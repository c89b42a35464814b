from django.conf import settings
from django.db import models


class OrgAccess(models.TextChoices):
    """How the whole organisation may use a resource (team shares live in iam.Share)."""

    NONE = "none", "Private"
    VIEWER = "viewer", "Everyone can use"
    EDITOR = "editor", "Everyone can edit"


class SharedResource(models.Model):
    """Mixin for things people own and share (agents, knowledge bases).

    Who may do what with one is decided only by iam.policy, never ad hoc in views.
    """

    # Every reference from a tenant table to a user (this owner, created_by, author, user...) keeps its column and
    # Django relation but has no database foreign key (db_constraint=False). Each such key put two triggers on the
    # one shared users table per organisation, and each new organisation's keys reloaded all of them: provisioning
    # slowed down with every organisation, and every change to a user row checked them all. Integrity holds without
    # it: users are never deleted, only made inactive tombstones (accounts.services.user_delete), a cascading delete
    # could not reach other organisations' schemas anyway, and a restore maps or refuses the user ids it cannot
    # place (backups.archive). tenants/tests/test_public_references.py keeps tenant tables free of such keys.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_constraint=False)
    org_access = models.CharField(max_length=8, choices=OrgAccess.choices, default=OrgAccess.NONE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
