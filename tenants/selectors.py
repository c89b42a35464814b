from django.db.models import QuerySet

from accounts.models import User

from .models import Tenant


def tenant_list_for_user(*, user: User) -> QuerySet[Tenant]:
    return Tenant.objects.filter(memberships__user=user).exclude(schema_name="public").order_by("slug")


def tenant_get_by_slug(*, slug: str) -> Tenant | None:
    return Tenant.objects.exclude(schema_name="public").filter(slug=slug).first()
