"""API routes (mounted under /api/v1/ on tenant hosts)."""

from django.urls import path

from . import apis

urlpatterns = [
    path("teams/", apis.TeamListApi.as_view(), name="api-teams"),
    path("teams/<int:team_id>/", apis.TeamDetailApi.as_view(), name="api-team"),
    path("teams/<int:team_id>/members/", apis.TeamMemberListApi.as_view(), name="api-team-members"),
    path("teams/<int:team_id>/members/<int:user_id>/", apis.TeamMemberDetailApi.as_view(), name="api-team-member"),
    path("shares/", apis.ShareListApi.as_view(), name="api-shares"),
    path("shares/<int:share_id>/", apis.ShareDetailApi.as_view(), name="api-share"),
    path("ownership/transfer/", apis.OwnershipTransferApi.as_view(), name="api-ownership-transfer"),
    path("api-keys/", apis.ApiKeyListApi.as_view(), name="api-api-keys"),
    path("api-keys/<int:key_id>/", apis.ApiKeyDetailApi.as_view(), name="api-api-key"),
    path("iam/settings/", apis.IamSettingsApi.as_view(), name="api-iam-settings"),
    path("members/", apis.MemberListApi.as_view(), name="api-members"),
    path("members/<int:user_id>/", apis.MemberDetailApi.as_view(), name="api-member"),
    path("invitations/", apis.InvitationListApi.as_view(), name="api-invitations"),
    path("invitations/<int:invitation_id>/", apis.InvitationDetailApi.as_view(), name="api-invitation"),
]
