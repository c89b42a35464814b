"""The Content-Security-Policy header: django-csp's middleware with the policy in settings.CONTENT_SECURITY_POLICY,
plus the one source a fixed setting cannot name, the page's own host for WebSockets."""

from __future__ import annotations

from csp.middleware import CSPMiddleware, PolicyParts
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """Adds ws(s)://<this host> to connect-src: chat and live updates open WebSockets on the organisation's own
    host, which 'self' covers only in browsers that implement CSP Level 3's rule for it. Plain ws:// only on a
    plain HTTP page (development); behind TLS the page gets wss:// alone."""

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        try:
            host = request.get_host()
        except DisallowedHost:  # the 400 for an unknown host: no page, nothing to connect to
            return parts
        scheme = "wss" if request.is_secure() else "ws"
        parts.update = {**(parts.update or {}), "connect-src": [f"{scheme}://{host}"]}
        return parts
