from typing import Any

from django.conf import settings
from django.http import HttpRequest

from .tenancy import public_site_url


def platform(request: HttpRequest) -> dict[str, Any]:
    tenant = getattr(request, "tenant", None)
    is_public = tenant is None or tenant.schema_name == "public"
    return {
        "BASE_DOMAIN": settings.BASE_DOMAIN,
        "current_tenant": None if is_public else tenant,
        "is_public_site": is_public,
        "public_site_url": public_site_url(),
    }
