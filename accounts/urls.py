"""API routes (mounted under /api/v1/ on tenant hosts)."""

from django.urls import path

from . import apis

urlpatterns = [
    path("auth/token/", apis.TokenObtainApi.as_view(), name="api-token"),
    path("auth/token/refresh/", apis.TokenRefreshApi.as_view(), name="api-token-refresh"),
    path("auth/logout/", apis.LogoutApi.as_view(), name="api-logout"),
    path("me/sessions/", apis.MySessionListApi.as_view(), name="api-my-sessions"),
    path("me/sessions/<int:session_id>/", apis.MySessionDetailApi.as_view(), name="api-my-session"),
    path("me/tokens/revoke/", apis.MyTokensRevokeApi.as_view(), name="api-my-tokens-revoke"),
    path("me/export/", apis.MyExportApi.as_view(), name="api-my-export"),
    path("me/delete/", apis.AccountDeleteApi.as_view(), name="api-my-delete"),
    path("schema/", apis.SchemaApi.as_view(), name="api-schema"),
    path("docs/", apis.SwaggerUiApi.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", apis.RedocApi.as_view(url_name="api-schema"), name="api-redoc"),
]
