"""Dashboard page routes (mounted at / on tenant hosts)."""

from django.urls import path

from . import views

urlpatterns = [
    path("profile/", views.profile_page, name="dash-profile"),
    path("profile/sessions/<int:session_id>/end/", views.session_end_view, name="dash-session-end"),
    path("profile/export/", views.export_view, name="dash-profile-export"),
    path("profile/delete/", views.delete_view, name="dash-profile-delete"),
    # The end of a login on the public site: a one-time token carried to this organisation's host.
    path("login/handoff/<str:token>/", views.login_handoff_view, name="login-handoff"),
]
