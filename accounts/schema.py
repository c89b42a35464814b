"""drf-spectacular: document our two header schemes (imported in AccountsConfig.ready())."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class TenantJWTScheme(OpenApiAuthenticationExtension):
    target_class = "iam.authentication.TenantJWTAuthentication"
    name = "jwtAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "Access token from POST /api/v1/auth/token/. Valid only on the organisation host "
            "it was issued on.",
        }


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "iam.authentication.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key agk_<prefix>_<secret>`. Keys are created by admins (or by members if "
            "allowed) with scopes read/write/chat/admin and optionally a list of agents.",
        }
