"""Dashboard pages for knowledge bases: list and create, documents with drag-and-drop upload and live
progress, search playground, versions with what changed and rollback.

Uploads and live document status go straight from the browser to the knowledge API (knowledge/apis.py) and
the event bus (/ws/events/), so no upload logic lives here; the pages call knowledge.services/selectors.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.errors import DomainError
from core.models import OrgAccess
from iam.dashboard import dashboard_page, form_error, sharing_context
from iam.policy import principal_can, principal_can_create

from . import reranking, retrieval, selectors, services, tuning
from .ocr import installed_ocr_languages, ocr_available
from .tasks import tune_search_task


class KnowledgeBaseForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    org_access = forms.ChoiceField(
        label="Who in the organisation can use it", choices=OrgAccess.choices, initial=OrgAccess.NONE
    )


@dashboard_page
def kb_list_page(request: HttpRequest) -> HttpResponse:
    principal = request.principal
    form = KnowledgeBaseForm(request.POST or None)
    if request.method == "POST":
        if not principal_can_create(principal):
            return render(
                request, "403.html", {"exception": "Read-only members cannot create knowledge bases."}, status=403
            )
        if form.is_valid():
            try:
                kb = services.knowledge_base_create(principal=principal, **form.cleaned_data)
            except DomainError as exc:
                form_error(form, exc)
            else:
                messages.success(request, f"Knowledge base “{kb.name}” created. Add documents below.")
                return redirect("dash-kb", kb_id=kb.pk)
    kbs = selectors.knowledge_base_list(principal=principal).order_by("name")
    query = request.GET.get("q", "").strip()
    if query:
        kbs = kbs.filter(name__icontains=query)
    return render(
        request,
        "knowledge/list.html",
        {"kbs": kbs, "form": form, "q": query, "nav": "knowledge", "can_create": principal_can_create(principal)},
        status=400 if form.errors else 200,
    )


@dashboard_page
def kb_detail_page(request: HttpRequest, kb_id: int) -> HttpResponse:
    kb = selectors.knowledge_base_get(principal=request.principal, kb_id=kb_id)
    documents = selectors.document_list(kb=kb)[:500]
    return render(
        request,
        "knowledge/detail.html",
        {
            "kb": kb,
            "documents": documents,
            "nav": "knowledge",
            "tab": "documents",
            "ocr_available": ocr_available(),
            "can_edit": principal_can(request.principal, "edit", kb),
            **sharing_context(request.principal, kb, "knowledge_base"),
        },
    )


@require_POST
@dashboard_page
def kb_document_delete_view(request: HttpRequest, kb_id: int, document_id: int) -> HttpResponse:
    kb = selectors.knowledge_base_get(principal=request.principal, kb_id=kb_id, action="edit")
    document = selectors.document_get(kb=kb, document_id=document_id)
    version = services.document_delete(document=document, user=request.user)
    messages.success(request, f"“{document.title}” removed (version {version.number}). Roll back to restore it.")
    return redirect("dash-kb", kb_id=kb.pk)


@dashboard_page
def kb_search_page(request: HttpRequest, kb_id: int) -> HttpResponse:
    kb = selectors.knowledge_base_get(principal=request.principal, kb_id=kb_id, action="view")  # search = read
    query = request.GET.get("q", "").strip()
    mode = request.GET.get("mode", "hybrid")
    hits, error, reranker = [], None, None
    if query:
        try:
            opts = retrieval.search_settings_for(kb)
            reranker = reranking.reranker_for(opts["reranker"])
            top_k = int(request.GET.get("k", retrieval.DEFAULT_TOP_K))
            hits = retrieval.search(
                knowledge_base=kb,
                query=query,
                top_k=top_k,
                mode=mode,
                version=selectors.parse_version(request.GET.get("version")),
                search_settings=opts,
            )
        except (DomainError, ValueError) as exc:
            error = getattr(exc, "message", "Check the search settings.")
    template = "knowledge/_search_results.html" if request.htmx else "knowledge/search.html"
    return render(
        request,
        template,
        {
            "kb": kb,
            "q": query,
            "mode": mode,
            "hits": hits,
            "error": error,
            "reranker": reranker.name if reranker else None,
            "reranked": reranking.rerank_applied(hits),
            "modes": retrieval.MODES,
            "k": request.GET.get("k", retrieval.DEFAULT_TOP_K),
            "max_k": retrieval.MAX_TOP_K,
            "version": request.GET.get("version", ""),
            "nav": "knowledge",
            "tab": "search",
        },
    )


@dashboard_page
def kb_versions_page(request: HttpRequest, kb_id: int) -> HttpResponse:
    kb = selectors.knowledge_base_get(principal=request.principal, kb_id=kb_id)
    versions = list(selectors.version_list(kb=kb)[:100])
    diff = None
    shown = request.GET.get("v")
    if shown:
        number = int(shown) if shown.isdigit() else 0
        version = selectors.version_get(kb=kb, number=number)
        diff = {"version": version, **selectors.version_diff(kb=kb, base=max(number - 1, 0), target=number)}
    return render(
        request,
        "knowledge/versions.html",
        {
            "kb": kb,
            "versions": versions,
            "diff": diff,
            "nav": "knowledge",
            "tab": "versions",
            "can_edit": principal_can(request.principal, "edit", kb),
            "oldest": services.oldest_retained_version(kb),
        },
    )


@require_POST
@dashboard_page
def kb_rollback_view(request: HttpRequest, kb_id: int, number: int) -> HttpResponse:
    kb = selectors.knowledge_base_get(principal=request.principal, kb_id=kb_id, action="edit")
    try:
        version = services.knowledge_base_rollback(kb=kb, to_version=number, user=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Rolled back to the content of version {number} (now version {version.number}).")
    return redirect("dash-kb-versions", kb_id=kb.pk)


PASSAGES_SHOWN = 500


@dashboard_page
def kb_chunk_page(request: HttpRequest, kb_id: int, document_id: int) -> HttpResponse:
    """A document's passages, one highlighted: where a chat citation leads."""
    kb, document, chunks = selectors.document_passages_for(
        principal=request.principal, kb_id=kb_id, document_id=document_id
    )
    try:
        highlight = int(request.GET.get("chunk", "0"))
    except ValueError:
        highlight = 0
    # At most PASSAGES_SHOWN passages, around the highlighted one: a citation of page 250 of a long PDF is shown.
    chunks = chunks.filter(position__gte=highlight - PASSAGES_SHOWN // 2)[:PASSAGES_SHOWN]
    template = "knowledge/_passage.html" if request.htmx else "knowledge/document.html"
    return render(
        request,
        template,
        {
            "kb": kb,
            "document": document,
            "chunks": chunks,
            "highlight": highlight,
            "nav": "knowledge",
            "can_view_kb": principal_can(request.principal, "view", kb),  # else only cited passages are shown
        },
    )


class RestoreToTimeForm(forms.Form):
    at = forms.DateTimeField(label="Restore to its content at (UTC)")


@require_POST
@dashboard_page
def kb_restore_to_time_view(request: HttpRequest, kb_id: int) -> HttpResponse:
    kb = selectors.knowledge_base_get(principal=request.principal, kb_id=kb_id, action="edit")
    form = RestoreToTimeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give a date and time to restore to.")
        return redirect("dash-kb-versions", kb_id=kb.pk)
    try:
        version = services.knowledge_base_restore_to_time(kb=kb, at=form.cleaned_data["at"], user=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        restored = version.changes.get("rolled_back_to")
        messages.success(request, f"Restored the content of version {restored} (now version {version.number}).")
    return redirect("dash-kb-versions", kb_id=kb.pk)


# --- settings and search tuning ----------------------------------------------------------------------


class KnowledgeBaseSettingsForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    ocr_language = forms.CharField(
        label="OCR language",
        max_length=100,
        help_text="Tesseract languages of scanned pages and images, joined by +: eng, eng+deu.",
    )


@dashboard_page
def kb_settings_page(request: HttpRequest, kb_id: int) -> HttpResponse:
    kb = selectors.knowledge_base_get(principal=request.principal, kb_id=kb_id)
    can_edit = principal_can(request.principal, "edit", kb)
    initial = {"name": kb.name, "description": kb.description, "ocr_language": kb.ocr_language}
    form = KnowledgeBaseSettingsForm(request.POST or None, initial=initial)
    if request.method == "POST":
        # Re-checked on write: the page may have been opened before a role change.
        kb = selectors.knowledge_base_get(principal=request.principal, kb_id=kb_id, action="edit")
        if form.is_valid():
            try:
                services.knowledge_base_update(kb=kb, principal=request.principal, **form.cleaned_data)
            except DomainError as exc:
                form_error(form, exc)
            else:
                messages.success(request, "Settings saved.")
                return redirect("dash-kb-settings", kb_id=kb.pk)
    if not can_edit:
        for field in form.fields.values():
            field.disabled = True
    return render(
        request,
        "knowledge/settings.html",
        {
            "kb": kb,
            "form": form,
            "nav": "knowledge",
            "tab": "settings",
            "can_edit": can_edit,
            "ocr_languages": sorted(installed_ocr_languages()),
            "tuning": tuning.tuning_status(kb=kb),
        },
        status=400 if form.errors else 200,
    )


@dashboard_page
def kb_tuning_panel(request: HttpRequest, kb_id: int) -> HttpResponse:
    """The tuning panel alone: the settings page polls it while a tuning runs."""
    kb = selectors.knowledge_base_get(principal=request.principal, kb_id=kb_id)
    can_edit = principal_can(request.principal, "edit", kb)
    return render(
        request, "knowledge/_tuning.html", {"kb": kb, "tuning": tuning.tuning_status(kb=kb), "can_edit": can_edit}
    )


@require_POST
@dashboard_page
def kb_tune_view(request: HttpRequest, kb_id: int) -> HttpResponse:
    kb = selectors.knowledge_base_get(principal=request.principal, kb_id=kb_id, action="edit")
    tuning.tuning_request(kb=kb, principal=request.principal, enqueue=tune_search_task.apply_async)
    messages.success(request, "Tuning search on your documents: the figures appear here when it is done.")
    return redirect("dash-kb-settings", kb_id=kb.pk)


@require_POST
@dashboard_page
def kb_tuning_reset_view(request: HttpRequest, kb_id: int) -> HttpResponse:
    kb = selectors.knowledge_base_get(principal=request.principal, kb_id=kb_id, action="edit")
    tuning.tuning_reset(kb=kb, principal=request.principal)
    messages.success(request, "Search uses the default settings again; automatic tuning is off.")
    return redirect("dash-kb-settings", kb_id=kb.pk)
