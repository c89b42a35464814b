"""Page routes (mounted at / on tenant hosts). Management pages are the dashboard's; the
invitation landing page is part of the sign-up flow."""

from django.urls import path

from . import views

urlpatterns = [
    path("invitations/<str:token>/", views.invitation_accept_page, name="invitation_accept"),
    # Team admin
    path("manage/", views.members_page, name="dash-admin"),
    path("manage/members/", views.members_page, name="dash-members"),
    path("manage/members/<int:user_id>/role/", views.member_role_view, name="dash-member-role"),
    path("manage/members/<int:user_id>/remove/", views.member_remove_view, name="dash-member-remove"),
    path("manage/invitations/<int:invitation_id>/revoke/", views.invitation_revoke_view, name="dash-invitation-revoke"),
    path("manage/teams/", views.teams_page, name="dash-teams"),
    path("manage/teams/<int:team_id>/members/", views.team_member_view, name="dash-team-member"),
    path("manage/teams/<int:team_id>/delete/", views.team_delete_view, name="dash-team-delete"),
    path("api-keys/", views.api_keys_page, name="dash-api-keys"),
    path("api-keys/<int:key_id>/revoke/", views.api_key_revoke_view, name="dash-api-key-revoke"),
    path("sharing/", views.share_view, name="dash-share"),
]
