"""An organisation's whole export: documented JSON and the original files in one zip (docs/operations.md, "Data
lifecycle"), built by a Celery task into the organisation's storage prefix and downloaded by its admins.

Secrets never leave: provider API keys, custom-tool secrets, API keys, webhook secrets and passwords are not
written. Embeddings are left out too (derived from the chunk text by the knowledge base's embedding model).
The export's state lives in Redis under the organisation's key for EXPORT_TTL_SECONDS; each new export removes
the zips whose state has expired.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from typing import IO, Any

from django.utils import timezone

from core.errors import Forbidden, NotFound
from core.redis_clients import redis_client, reply_text
from core.rls import db_as_system
from core.tenancy import tenant_key
from iam.policy import Principal, principal_can_manage
from iam.selectors import member_list, team_list, team_member_list
from iam.services import iam_settings_get
from knowledge import storage
from knowledge.models import Chunk, Document, KnowledgeBase
from tenants.models import Tenant

from .lifecycle import message_export, message_retention_days
from .models import Agent, Conversation, CustomTool, ProviderCredential

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "agentry-organisation-export"
EXPORT_FORMAT_VERSION = 1
EXPORT_TTL_SECONDS = 7 * 86400


def _state_key(export_id: str) -> str:
    return tenant_key("org-export", export_id)


def org_export_state_create(*, requested_by: int) -> dict[str, str]:
    """Record a new export as pending (its zip is then built by agents.tasks.org_export_build_task)."""
    export_id = uuid.uuid4().hex
    state = {
        "id": export_id,
        "status": "pending",
        "requested_by": str(requested_by),
        "created_at": timezone.now().isoformat(),
    }
    redis_client().hset(_state_key(export_id), mapping=state)
    redis_client().expire(_state_key(export_id), EXPORT_TTL_SECONDS)
    return state


def org_export_get(*, principal: Principal, export_id: str) -> dict[str, str]:
    if not principal_can_manage(principal):
        raise Forbidden("Only an organisation admin can see the organisation's exports.")
    raw = redis_client().hgetall(_state_key(export_id)) if export_id.isalnum() else {}
    if not raw:
        raise NotFound("No such export.")
    return {reply_text(k): reply_text(v) for k, v in raw.items()}


def org_export_open(*, principal: Principal, export_id: str) -> IO[bytes]:
    state = org_export_get(principal=principal, export_id=export_id)
    if state.get("status") != "done":
        raise NotFound("This export is not ready.")
    return storage.storage_open(state["path"])


def org_export_build(*, tenant: Tenant, export_id: str) -> dict[str, str]:
    """Write the zip for `export_id` into storage (in the organisation's schema, as the system) and record it."""
    key = _state_key(export_id)
    redis_client().hset(key, "status", "running")
    _expired_exports_delete()
    try:
        with tempfile.TemporaryFile() as out, db_as_system():
            manifest = org_export_write(tenant=tenant, out=out)
            out.seek(0)
            path = storage.storage_save(f"{storage.tenant_prefix()}exports/{export_id}.zip", out)
            size = out.seek(0, 2)
    except Exception as error:
        redis_client().hset(key, mapping={"status": "failed", "error": type(error).__name__})
        raise
    state = {
        "status": "done",
        "path": path,
        "size": str(size),
        "finished_at": timezone.now().isoformat(),
        "counts": json.dumps(manifest["counts"]),
    }
    redis_client().hset(key, mapping=state)
    return state


def _expired_exports_delete() -> None:
    folder = f"{storage.tenant_prefix()}exports"
    try:
        _, names = storage.knowledge_storage().listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        export_id = name.removesuffix(".zip")
        if not redis_client().exists(_state_key(export_id)):
            storage.storage_delete(f"{folder}/{name}")


def org_export_write(*, tenant: Tenant, out: IO[bytes]) -> dict[str, Any]:
    """Write the export zip of `tenant` (its schema is the current one) to `out`; returns the manifest."""
    files: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:

        def put_json(name: str, data: Any) -> None:
            body = json.dumps(data, ensure_ascii=False, indent=1, default=str).encode()
            archive.writestr(name, body)
            files[name] = {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}

        put_json("organisation.json", _organisation(tenant))
        members = _members(tenant)
        put_json("members.json", members)
        agents = _agents()
        put_json("agents.json", agents)
        knowledge_bases = _knowledge_bases()
        for kb in knowledge_bases:
            for document in kb["documents"]:
                if document["file"]:
                    digest, size = _copy_file(archive, document.pop("storage_path"), document["file"])
                    files[document["file"]] = {"sha256": digest, "size": size}
                else:
                    document.pop("storage_path")
        put_json("knowledge_bases.json", knowledge_bases)
        # One conversation per line: an organisation's history need not fit in memory at once.
        conversations = 0
        hasher, size = hashlib.sha256(), 0
        with archive.open("conversations.jsonl", "w") as lines:
            for conversation in _conversations():
                line = json.dumps(conversation, ensure_ascii=False, default=str).encode() + b"\n"
                lines.write(line)
                hasher.update(line)
                size += len(line)
                conversations += 1
        files["conversations.jsonl"] = {"sha256": hasher.hexdigest(), "size": size}
        counts = {
            "members": len(members["members"]),
            "agents": len(agents["agents"]),
            "knowledge_bases": len(knowledge_bases),
            "documents": sum(len(kb["documents"]) for kb in knowledge_bases),
            "conversations": conversations,
        }
        manifest = {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_FORMAT_VERSION,
            "organisation": tenant.slug,
            "created_at": timezone.now().isoformat(),
            "counts": counts,
            "files": files,
        }
        archive.writestr("manifest.json", json.dumps(manifest, indent=1))
    return manifest


def _copy_file(archive: zipfile.ZipFile, source: str, name: str) -> tuple[str, int]:
    hasher, size = hashlib.sha256(), 0
    with storage.storage_open(source) as src, archive.open(name, "w") as dst:
        while block := src.read(1 << 20):
            hasher.update(block)
            size += len(block)
            dst.write(block)
    return hasher.hexdigest(), size


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _organisation(tenant: Tenant) -> dict[str, Any]:
    return {
        "slug": tenant.slug,
        "name": tenant.name,
        "created_at": _iso(tenant.created_at),
        "settings": {
            "message_retention_days": tenant.message_retention_days,
            "message_retention_days_effective": message_retention_days(tenant),
            "departed_member_messages": tenant.departed_member_messages,
            "members_can_create_api_keys": iam_settings_get().members_can_create_api_keys,
        },
    }


def _members(tenant: Tenant) -> dict[str, Any]:
    return {
        "members": [
            {
                "user_id": m.user_id,
                "email": m.user.email,
                "display_name": m.user.display_name,
                "role": m.role,
                "joined": _iso(m.created_at),
            }
            for m in member_list(tenant)
        ],
        "teams": [
            {"id": t.pk, "name": t.name, "members": [tm.user_id for tm in team_member_list(t)]} for t in team_list()
        ],
    }


def _agents() -> dict[str, Any]:
    return {
        "providers": [  # without their API keys
            {"id": p.pk, "name": p.name, "kind": p.kind, "base_url": p.base_url, "default_model": p.default_model}
            for p in ProviderCredential.objects.order_by("pk")
        ],
        "custom_tools": [  # without their secrets
            {"id": t.pk, "name": t.name, "description": t.description, "template": t.template, "openapi": t.openapi}
            for t in CustomTool.objects.order_by("pk")
        ],
        "agents": [
            {
                "id": a.pk,
                "name": a.name,
                "description": a.description,
                "agent_type": a.agent_type,
                "owner_id": a.owner_id,
                "org_access": a.org_access,
                "provider_id": a.provider_id,
                "model": a.model,
                "system_prompt": a.system_prompt,
                "sampling": a.sampling,
                "retrieval": a.retrieval,
                "tools": a.tools,
                "limits": a.limits,
                "is_enabled": a.is_enabled,
                "knowledge_base_ids": sorted(kb.pk for kb in a.knowledge_bases.all()),
                "current_version": a.current_version.number if a.current_version else None,
                "created_at": _iso(a.created_at),
                "versions": [
                    {
                        "number": v.number,
                        "config": v.config,
                        "author_id": v.author_id,
                        "note": v.note,
                        "restored_from": v.restored_from,
                        "created_at": _iso(v.created_at),
                    }
                    for v in a.versions.order_by("number")
                ],
            }
            for a in Agent.objects.select_related("current_version").prefetch_related("knowledge_bases").order_by("pk")
        ],
    }


def _knowledge_bases() -> list[dict[str, Any]]:
    exported = []
    for kb in KnowledgeBase.objects.order_by("pk"):
        documents = []
        for d in Document.objects.filter(knowledge_base=kb).order_by("pk"):
            name = storage.safe_filename(d.original_filename or d.title or "document")
            documents.append(
                {
                    "id": d.pk,
                    "title": d.title,
                    "source_type": d.source_type,
                    "mime_type": d.mime_type,
                    "size_bytes": d.size_bytes,
                    "content_hash": d.content_hash,
                    "status": d.status,
                    "page_count": d.page_count,
                    "chunk_count": d.chunk_count,
                    "metadata": d.metadata,
                    "original_filename": d.original_filename,
                    "uploaded_by_id": d.uploaded_by_id,
                    "created_at": _iso(d.created_at),
                    "file": f"files/documents/{d.pk}/{name}" if d.storage_path else None,
                    "storage_path": d.storage_path,
                }
            )
        exported.append(
            {
                "id": kb.pk,
                "name": kb.name,
                "description": kb.description,
                "owner_id": kb.owner_id,
                "org_access": kb.org_access,
                "embedding_model": kb.embedding_model,
                "embedding_dimension": kb.embedding_dimension,
                "chunk_size": kb.chunk_size,
                "chunk_overlap": kb.chunk_overlap,
                "search_settings": kb.search_settings,
                "current_version": kb.current_version,
                "created_at": _iso(kb.created_at),
                "versions": [
                    {"number": v.number, "note": v.note, "changes": v.changes, "created_at": _iso(v.created_at)}
                    for v in kb.versions.order_by("number")
                ],
                "documents": documents,
                "chunks": [
                    {
                        "id": c.pk,
                        "document_id": c.document_id,
                        "position": c.position,
                        "token_count": c.token_count,
                        "content_hash": c.content_hash,
                        "page_start": c.page_start,
                        "page_end": c.page_end,
                        "section_path": c.section_path,
                        "metadata": c.metadata,
                        "valid_from": c.valid_from,
                        "valid_to": c.valid_to,
                    }
                    for c in Chunk.objects.filter(knowledge_base=kb).order_by("document_id", "position").iterator()
                ],
            }
        )
    return exported


def _conversations() -> Iterator[dict[str, Any]]:
    for conversation in Conversation.objects.order_by("created_at").iterator():
        yield {
            "id": str(conversation.id),
            "agent_id": conversation.agent_id,
            "user_id": conversation.user_id,
            "title": conversation.title,
            "created_at": _iso(conversation.created_at),
            "updated_at": _iso(conversation.updated_at),
            "messages": [message_export(m) for m in conversation.messages.order_by("created", "id")],
        }
