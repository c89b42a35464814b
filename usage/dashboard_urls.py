"""Dashboard page routes (mounted at / on tenant hosts)."""

from django.urls import path

from . import views

urlpatterns = [
    path("manage/usage/", views.usage_page, name="dash-usage"),
    path("manage/usage/limits/", views.sublimit_view, name="dash-sublimit"),
    path("manage/audit/", views.audit_page, name="dash-audit"),
]
