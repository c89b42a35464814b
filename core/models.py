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

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    org_access = models.CharField(max_length=8, choices=OrgAccess.choices, default=OrgAccess.NONE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
