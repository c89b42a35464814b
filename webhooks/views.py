"""Webhook dashboard pages: endpoints, delivery log, replay and test sends (admins only).
Thin views over webhooks.services / webhooks.selectors."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.errors import DomainError
from core.events import EVENT_TYPES
from iam.dashboard import admin_page, form_error

from . import selectors, services
from .models import DeliveryStatus


class EndpointForm(forms.Form):
    url = forms.URLField(
        label="URL", max_length=2000, assume_scheme="https", help_text="HTTPS endpoint that receives signed POSTs."
    )
    description = forms.CharField(max_length=200, required=False)
    event_types = forms.MultipleChoiceField(label="Events", widget=forms.CheckboxSelectMultiple)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["event_types"].choices = [("*", "All events")] + [(name, name) for name in sorted(EVENT_TYPES)]


@admin_page
def webhooks_page(request: HttpRequest) -> HttpResponse:
    form = EndpointForm(request.POST or None, initial={"event_types": ["*"]})
    if request.method == "POST" and form.is_valid():
        try:
            endpoint = services.endpoint_create(principal=request.principal, **form.cleaned_data)
        except DomainError as exc:
            form_error(form, exc)
        else:
            messages.success(request, "Endpoint added. Verify signatures with its secret (shown on its page).")
            return redirect("dash-webhook", endpoint_id=endpoint.pk)
    return render(
        request,
        "manage/webhooks.html",
        {"endpoints": selectors.endpoint_list(), "form": form, "nav": "admin", "tab": "webhooks"},
        status=400 if form.errors else 200,
    )


@admin_page
def webhook_page(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = selectors.endpoint_get(endpoint_id)
    status = request.GET.get("status") or None
    deliveries = selectors.delivery_list(endpoint=endpoint, status=status)[:200]
    return render(
        request,
        "manage/webhook.html",
        {
            "endpoint": endpoint,
            "deliveries": deliveries,
            "status": status,
            "statuses": DeliveryStatus.choices,
            "nav": "admin",
            "tab": "webhooks",
        },
    )


@require_POST
@admin_page
def webhook_action_view(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = selectors.endpoint_get(endpoint_id)
    action = request.POST.get("action")
    try:
        if action == "test":
            services.endpoint_send_test(principal=request.principal, endpoint=endpoint)
            messages.success(request, "Test event queued; it appears in the log below.")
        elif action == "toggle":
            services.endpoint_update(principal=request.principal, endpoint=endpoint, is_active=not endpoint.is_active)
            messages.success(request, "Endpoint enabled." if not endpoint.is_active else "Endpoint disabled.")
        elif action == "delete":
            services.endpoint_delete(principal=request.principal, endpoint=endpoint)
            messages.success(request, "Endpoint deleted.")
            return redirect("dash-webhooks")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("dash-webhook", endpoint_id=endpoint.pk)


@require_POST
@admin_page
def delivery_replay_view(request: HttpRequest, delivery_id: int) -> HttpResponse:
    delivery = selectors.delivery_get(delivery_id)
    try:
        services.delivery_replay(principal=request.principal, delivery=delivery)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Delivery of {delivery.event_type} replayed.")
    return redirect("dash-webhook", endpoint_id=delivery.endpoint_id)
