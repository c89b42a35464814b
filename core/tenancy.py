from django.conf import settings


def public_site_url() -> str:
    """Absolute URL of the public site (sign-up, landing), e.g. http://localhost:8000."""
    port = f":{settings.PUBLIC_PORT}" if settings.PUBLIC_PORT not in ("", "80", "443") else ""
    return f"{settings.PUBLIC_SCHEME}://{settings.BASE_DOMAIN}{port}"
