"""Dashboard page routes (mounted at / on tenant hosts)."""

from django.urls import path

from . import views

urlpatterns = [
    path("manage/webhooks/", views.webhooks_page, name="dash-webhooks"),
    path("manage/webhooks/<int:endpoint_id>/", views.webhook_page, name="dash-webhook"),
    path("manage/webhooks/<int:endpoint_id>/action/", views.webhook_action_view, name="dash-webhook-action"),
    path(
        "manage/webhooks/deliveries/<int:delivery_id>/replay/", views.delivery_replay_view, name="dash-delivery-replay"
    ),
]
