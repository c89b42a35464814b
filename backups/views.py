"""Dashboard: Organisation settings → Backups (admins only): the list, back up now, download, restore, schedule."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from core.errors import DomainError
from iam.dashboard import admin_page, form_error

from . import selectors, services
from .apis import archive_response
from .models import BackupPurpose


class ScheduleForm(forms.Form):
    enabled = forms.BooleanField(required=False, label="Back up on a schedule")
    hour = forms.IntegerField(min_value=0, max_value=23, label="Hour (UTC)")
    minute = forms.IntegerField(min_value=0, max_value=59)
    day_of_week = forms.CharField(max_length=20, initial="*", label="Days of the week (crontab: * or 1-5 or 0,3)")
    keep_last = forms.IntegerField(min_value=1, max_value=365, label="Keep the last")
    include_conversations = forms.BooleanField(required=False, label="Include conversations")


class RestoreForm(forms.Form):
    backup_id = forms.UUIDField(widget=forms.HiddenInput)
    new_name = forms.CharField(max_length=100, required=False, label="New organisation's name")
    new_slug = forms.CharField(max_length=40, required=False, label="New organisation's address")


def _schedule_initial(request: HttpRequest) -> dict[str, object]:
    view = selectors.backup_schedule_get(principal=request.principal)
    minute, hour, _, _, day_of_week = (view.crontab or "30 2 * * *").split()
    return {
        "enabled": view.enabled,
        "hour": int(hour) if hour.isdigit() else 2,
        "minute": int(minute) if minute.isdigit() else 30,
        "day_of_week": day_of_week,
        "keep_last": view.keep_last,
        "include_conversations": view.include_conversations,
    }


@admin_page
def backups_page(request: HttpRequest) -> HttpResponse:
    principal = request.principal
    intent = request.POST.get("intent") if request.method == "POST" else None
    schedule_form = ScheduleForm(request.POST if intent == "schedule" else None, initial=_schedule_initial(request))
    restore_form = RestoreForm(request.POST if intent == "restore" else None)
    try:
        if intent == "export":
            services.export_request(principal=principal)
            messages.success(request, "The export is being prepared: this page shows when it can be downloaded.")
            return redirect("dash-backups")
        if intent == "backup":
            services.backup_request(principal=principal, include_conversations="no_conversations" not in request.POST)
            messages.success(request, "The backup is being made: this page shows when it is ready.")
            return redirect("dash-backups")
        if intent == "schedule" and schedule_form.is_valid():
            services.backup_schedule_update(principal=principal, **schedule_form.cleaned_data)
            messages.success(request, "Backup schedule saved.")
            return redirect("dash-backups")
        if intent == "restore" and restore_form.is_valid():
            data = restore_form.cleaned_data
            backup = selectors.backup_get_for_principal(principal=principal, backup_id=data["backup_id"])
            restore = services.restore_request(
                principal=principal, backup=backup, new_name=data["new_name"], new_slug=data["new_slug"] or None
            )
            messages.success(request, f"Restore into {restore.tenant.name} started: its progress is shown below.")
            return redirect("dash-backups")
    except DomainError as exc:
        form_error(schedule_form if intent == "schedule" else restore_form, exc)
        messages.error(request, exc.message)
    restores = list(selectors.restore_list(principal=principal)[:10])
    running = any(r.status not in ("done", "failed") for r in restores)
    backups = list(selectors.backup_list(principal=principal)[:50])
    exports = list(selectors.backup_list(principal=principal, purpose=BackupPurpose.EXPORT)[:5])
    running = running or any(b.status in ("pending", "running") for b in [*backups, *exports])
    return render(
        request,
        "backups/backups.html",
        {
            "backups": backups,
            "exports": exports,
            "restores": restores,
            "running": running,
            "schedule": selectors.backup_schedule_get(principal=principal),
            "schedule_form": schedule_form,
            "restore_form": restore_form,
            "nav": "admin",
            "tab": "backups",
        },
    )


def _download(request: HttpRequest, archive_id: str, purpose: str) -> HttpResponse:
    try:
        backup = selectors.backup_get_for_principal(principal=request.principal, backup_id=archive_id, purpose=purpose)
        return archive_response(backup)
    except DomainError:
        raise Http404("No such archive.") from None


@admin_page
def backup_download_view(request: HttpRequest, backup_id: str) -> HttpResponse:
    return _download(request, backup_id, BackupPurpose.BACKUP)


@admin_page
def export_download_view(request: HttpRequest, export_id: str) -> HttpResponse:
    return _download(request, export_id, BackupPurpose.EXPORT)
