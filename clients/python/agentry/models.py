"""Typed models of the Agentry API, generated from /api/v1/schema/ by scripts/generate_models.py.

Every response and request body is a TypedDict: plain JSON dicts, checked by type checkers, unchanged at run time.
Do not edit: regenerate (the script's docstring says how).
"""

from typing import Any, Literal, NotRequired, TypedDict

AccessLevelEnum = Literal["none", "viewer", "editor"]

BackupStatusEnum = Literal["pending", "running", "done", "failed"]

DepartedMemberMessagesEnum = Literal["delete", "anonymise"]

ErrorCodeEnum = Literal[
    "invalid",
    "parse_error",
    "nesting_too_deep",
    "payload_too_large",
    "unsupported_media_type",
    "not_acceptable",
    "method_not_allowed",
    "not_found",
    "unknown_tenant",
    "conflict",
    "last_admin",
    "not_authenticated",
    "authentication_failed",
    "token_not_valid",
    "token_wrong_tenant",
    "token_revoked",
    "api_key_invalid",
    "api_key_revoked",
    "api_key_expired",
    "api_key_owner_inactive",
    "invitation_invalid",
    "invitation_used",
    "invitation_expired",
    "invitation_other_email",
    "forbidden",
    "permission_denied",
    "scope_required",
    "topic_refused",
    "readonly",
    "admin_required",
    "throttled",
    "rate_limited",
    "quota_exceeded",
    "concurrency_limited",
    "overloaded",
    "limit_exceeded",
    "file_too_large",
    "insufficient_storage",
    "unsupported_type",
    "unreadable_document",
    "empty_document",
    "unsafe_url",
    "fetch_failed",
    "embedder_unavailable",
    "search_unavailable",
    "agent_disabled",
    "agent_misconfigured",
    "provider_disabled",
    "provider_missing",
    "provider_error",
    "provider_auth",
    "provider_timeout",
    "context_too_long",
    "secret_unreadable",
    "run_timeout",
    "cancelled",
    "unknown_tool",
    "invalid_arguments",
    "tool_failed",
    "tool_timeout",
    "http_failed",
    "host_not_approved",
    "not_configured",
    "backup_corrupt",
    "backup_incompatible",
    "provisioning_failed",
    "internal_error",
    "database_unavailable",
]

KnowledgeBaseTuningStatusEnum = Literal["tuned", "default", "too_few_questions", "reset"]

ModeEnum = Literal["hybrid", "dense", "lexical"]

RestoreStatusEnum = Literal["pending", "verifying", "restoring", "done", "failed"]

RoleEnum = Literal["admin", "user", "readonly"]

ScopeEnum = Literal["tenant", "user", "agent", "api_key"]

ScopesEnum = Literal["read", "write", "chat", "admin"]

SourceTypeEnum = Literal["file", "text", "url"]

TypeEnum = Literal[
    "run.queued",
    "message.start",
    "token",
    "citation",
    "tool.call",
    "tool.result",
    "message.end",
    "error",
]


class AccountDeleteRequest(TypedDict):
    confirm_email: str
    transfer_owned: NotRequired[bool]


class Transferred(TypedDict):
    tenant: str
    resource_type: str
    id: int
    to: int


class AccountDeleted(TypedDict):
    transferred: list[Transferred]


class Agent(TypedDict):
    id: int
    name: str
    description: str
    agent_type: str
    provider_id: int | None
    model: str
    system_prompt: str
    sampling: dict[str, Any]
    knowledge_base_ids: list[int]
    retrieval: dict[str, Any]
    tools: list[Any]
    limits: dict[str, Any]
    is_enabled: bool
    org_access: AccessLevelEnum
    owner_id: int | None
    version: int | None
    created_at: str
    updated_at: str


class AgentInputRequest(TypedDict):
    name: NotRequired[str]
    description: NotRequired[str]
    agent_type: NotRequired[str]
    provider_id: NotRequired[int | None]
    model: NotRequired[str]
    system_prompt: NotRequired[str]
    sampling: NotRequired[dict[str, Any]]
    knowledge_base_ids: NotRequired[list[int]]
    retrieval: NotRequired[dict[str, Any]]
    tools: NotRequired[list[Any]]
    limits: NotRequired[dict[str, Any]]
    is_enabled: NotRequired[bool]
    org_access: NotRequired[AccessLevelEnum]
    change_note: NotRequired[str]


class AgentList(TypedDict):
    results: list[Agent]


class AgentRestoreToTimeRequest(TypedDict):
    at: str
    note: NotRequired[str]


class AgentVersion(TypedDict):
    number: int
    config: dict[str, Any]
    author_id: int | None
    note: str
    restored_from: int | None
    created_at: str


ConfigChange = TypedDict(
    "ConfigChange",
    {
        "field": str,
        "from": Any,
        "to": Any,
    },
)


AgentVersionDiff = TypedDict(
    "AgentVersionDiff",
    {
        "from": int,
        "to": int,
        "changes": list[ConfigChange],
    },
)


class AgentVersionList(TypedDict):
    results: list[AgentVersion]


class AgentVersionRestoreRequest(TypedDict):
    note: NotRequired[str]


class _User(TypedDict):
    id: int
    email: str
    display_name: str


class ApiKey(TypedDict):
    id: int
    name: str
    prefix: str
    scopes: list[ScopesEnum]
    agent_ids: NotRequired[list[int] | None]
    expires_at: NotRequired[str | None]
    created_by: _User
    revoked_at: str | None
    last_used_at: str | None
    request_count: int
    created_at: str


class ApiKeyCreated(TypedDict):
    id: int
    name: str
    prefix: str
    scopes: list[ScopesEnum]
    agent_ids: NotRequired[list[int] | None]
    expires_at: NotRequired[str | None]
    created_by: _User
    revoked_at: str | None
    last_used_at: str | None
    request_count: int
    created_at: str
    key: str


class ApiKeyRequest(TypedDict):
    name: str
    scopes: list[ScopesEnum]
    agent_ids: NotRequired[list[int] | None]
    expires_at: NotRequired[str | None]


class ApprovedHost(TypedDict):
    id: int
    host: str
    note: NotRequired[str]


class ApprovedHostList(TypedDict):
    results: list[ApprovedHost]


class ApprovedHostRequest(TypedDict):
    host: str
    note: NotRequired[str]


class AuditEntry(TypedDict):
    id: int
    created_at: str
    actor_id: int | None
    actor_email: str
    actor_name: str
    api_key_id: int | None
    action: str
    target_type: str
    target_id: str
    target_repr: str
    before: Any | None
    after: Any | None
    request_id: str
    ip: str | None


class AuditPage(TypedDict):
    results: list[AuditEntry]
    next_before_id: int | None


class Backup(TypedDict):
    id: str
    status: BackupStatusEnum
    scheduled: bool
    include_conversations: bool
    size_bytes: int
    sha256: str
    counts: Any
    error: str
    created_at: str
    finished_at: str | None


class BackupCreateRequest(TypedDict):
    include_conversations: NotRequired[bool]


class BackupSchedule(TypedDict):
    own: bool
    enabled: bool
    crontab: str
    keep_last: int
    include_conversations: bool


class BackupScheduleRequest(TypedDict):
    enabled: bool
    minute: int
    hour: int
    day_of_week: NotRequired[str]
    keep_last: int
    include_conversations: bool


class ChatAccepted(TypedDict):
    run_id: str
    conversation_id: str
    message_id: int
    agent_version: int
    queued_position: int
    events_url: str


class Citation(TypedDict):
    """A payload whose listed keys are guaranteed and whose other keys (added by providers, plugins or newer versions)
    pass through unchanged.
    """

    n: int
    chunk_id: int | None
    document_id: int | None
    document_title: str
    position: int | None
    score: float
    knowledge_base_id: int | None
    snippet: str
    page_start: int | None
    page_end: int | None
    section_path: NotRequired[list[str]]


class RunError(TypedDict):
    """The error body (see Error), with any context keys it carries."""

    code: ErrorCodeEnum
    detail: str
    field: NotRequired[str]
    retry_after: NotRequired[int]
    fields: NotRequired[dict[str, list[str] | dict[str, Any]]]


class ChatAnswer(TypedDict):
    run_id: str
    conversation_id: str
    message_id: int
    agent_version: int
    queued_position: int
    content: str
    citations: list[Citation]
    tool_calls: list[dict[str, Any]]
    status: str
    usage: dict[str, Any] | None
    timings: dict[str, Any] | None
    kb_versions: dict[str, int] | None
    error: RunError | None


class ChatInputRequest(TypedDict):
    message: str
    conversation_id: NotRequired[str | None]
    regenerate: NotRequired[int | None]
    wait: NotRequired[bool]


class Chunk(TypedDict):
    id: int
    position: int
    text: str
    token_count: int
    content_hash: str
    metadata: dict[str, Any]
    page_start: int | None
    page_end: int | None
    section_path: Any
    valid_from: int
    valid_to: int | None


class ChunkList(TypedDict):
    results: list[Chunk]


class Conversation(TypedDict):
    id: str
    agent_id: int
    title: str
    created_at: str
    updated_at: str


class ConversationList(TypedDict):
    results: list[Conversation]


class Message(TypedDict):
    id: int
    role: str
    content: str
    content_html: str | None
    alternative_of: int | None
    citations: list[dict[str, Any]]
    tool_calls: list[dict[str, Any]]
    usage: dict[str, Any]
    latency_ms: int | None
    first_token_ms: int | None
    agent_version_id: int | None
    kb_versions: dict[str, Any]
    status: str
    error: RunError | None
    run_id: str | None
    created: str


class ConversationMessages(TypedDict):
    conversation_id: str
    agent_id: int
    results: list[Message]


class CustomTool(TypedDict):
    id: int
    name: str
    template: str
    has_secrets: bool
    description: str
    openapi: dict[str, Any]


class CustomToolInputRequest(TypedDict):
    name: NotRequired[str]
    template: NotRequired[str]
    params: NotRequired[dict[str, Any]]
    openapi: NotRequired[dict[str, Any]]
    secrets: NotRequired[dict[str, Any]]
    description: NotRequired[str]


class CustomToolList(TypedDict):
    results: list[CustomTool]


class CustomToolSummary(TypedDict):
    id: int
    name: str
    template: str
    has_secrets: bool


class DataPolicy(TypedDict):
    message_retention_days: int | None
    message_retention_days_effective: int | None
    departed_member_messages: DepartedMemberMessagesEnum


class Delivery(TypedDict):
    id: int
    endpoint_id: int
    event_id: str
    event_type: str
    status: str
    attempts: int
    response_code: int | None
    error: str
    duration_ms: int | None
    next_attempt_at: str | None
    delivered_at: str | None
    replay_of_id: int | None
    created_at: str


class Document(TypedDict):
    id: int
    knowledge_base_id: int
    title: str
    source_type: SourceTypeEnum
    source_url: str | None
    filename: str | None
    mime_type: str
    size_bytes: int
    content_hash: str
    status: str
    progress: int
    error: str | None
    page_count: int
    chunk_count: int
    metadata: dict[str, Any]
    version: int | None
    created_at: str
    updated_at: str


class TextSourceRequest(TypedDict):
    title: str
    text: str


class DocumentCreateRequest(TypedDict):
    """JSON: any mix of sources; each succeeds or fails on its own."""

    title: NotRequired[str]
    text: NotRequired[str]
    texts: NotRequired[list[TextSourceRequest]]
    url: NotRequired[str]
    urls: NotRequired[list[str]]
    metadata: NotRequired[dict[str, Any]]
    note: NotRequired[str]


class DocumentDeleted(TypedDict):
    version: int
    document: Document


class IngestError(TypedDict):
    """Every error, over HTTP, SSE and WebSocket (docs/errors.md lists each code). Errors may add context keys
    (`retry_after`, `quota`, `scope`, `required_scope`, ...); clients branch on `code`, never on `detail`.
    """

    code: ErrorCodeEnum
    detail: str
    field: NotRequired[str]
    retry_after: NotRequired[int]
    name: str
    fields: NotRequired[dict[str, list[str] | dict[str, Any]]]


class DocumentIngest(TypedDict):
    version: int | None
    documents: list[Document]
    unchanged: list[Document]
    errors: list[IngestError]


class DocumentIngestRefused(TypedDict):
    """Every source was refused: the error of the first, and all of them in `errors`. A request refused before any
    source was read (no source at all, a malformed form) carries the error alone.
    """

    code: ErrorCodeEnum
    detail: str
    field: NotRequired[str]
    retry_after: NotRequired[int]
    version: NotRequired[int | None]
    documents: NotRequired[list[Document]]
    unchanged: NotRequired[list[Document]]
    errors: NotRequired[list[IngestError]]
    fields: NotRequired[dict[str, list[str] | dict[str, Any]]]


class DocumentList(TypedDict):
    results: list[Document]


class DocumentUploadRequest(TypedDict):
    """multipart/form-data: files (repeat `files`), plus any source of the JSON form."""

    files: NotRequired[list[str]]
    title: NotRequired[str]
    text: NotRequired[str]
    texts: NotRequired[str]
    url: NotRequired[str]
    metadata: NotRequired[str]
    note: NotRequired[str]


class Endpoint(TypedDict):
    id: int
    url: str
    description: NotRequired[str]
    event_types: list[str]
    is_active: NotRequired[bool]
    secret: str
    disabled_reason: str
    consecutive_failures: int
    created_at: str


class EndpointRequest(TypedDict):
    url: str
    description: NotRequired[str]
    event_types: list[str]
    is_active: NotRequired[bool]


class Error(TypedDict):
    """Every error, over HTTP, SSE and WebSocket (docs/errors.md lists each code). Errors may add context keys
    (`retry_after`, `quota`, `scope`, `required_scope`, ...); clients branch on `code`, never on `detail`.
    """

    code: ErrorCodeEnum
    detail: str
    field: NotRequired[str]
    retry_after: NotRequired[int]
    fields: NotRequired[dict[str, list[str] | dict[str, Any]]]


class EventType(TypedDict):
    type: str
    description: str


class IamSettings(TypedDict):
    members_can_create_api_keys: bool


class Invitation(TypedDict):
    id: int
    email: str
    role: NotRequired[RoleEnum]
    invited_by: _User
    expires_at: str
    accepted_at: str | None
    revoked_at: str | None
    created_at: str


class InvitationRequest(TypedDict):
    email: str
    role: NotRequired[RoleEnum]


class KnowledgeBasePermissions(TypedDict):
    edit: bool
    delete: bool
    share: bool


class KnowledgeBase(TypedDict):
    id: int
    name: str
    description: str
    owner_id: int | None
    org_access: AccessLevelEnum
    embedding_model: str
    embedding_dimension: int
    chunk_size: int
    chunk_overlap: int
    search_settings: dict[str, Any]
    ocr_language: str
    current_version: int
    versions_retained: int
    created_at: str
    updated_at: str
    can: NotRequired[KnowledgeBasePermissions]


class KnowledgeBaseInputRequest(TypedDict):
    name: NotRequired[str]
    description: NotRequired[str]
    embedding_model: NotRequired[str]
    chunk_size: NotRequired[int]
    chunk_overlap: NotRequired[int]
    org_access: NotRequired[AccessLevelEnum]
    versions_retained: NotRequired[int]
    search_settings: NotRequired[dict[str, Any]]
    ocr_language: NotRequired[str]


class KnowledgeBaseList(TypedDict):
    results: list[KnowledgeBase]


class KnowledgeBaseRestoreToTimeRequest(TypedDict):
    at: str


class TuningGridEntry(TypedDict):
    settings: dict[str, Any]
    mrr: float


class KnowledgeBaseTuning(TypedDict):
    auto_tune: bool
    running: bool
    overridden: list[str]
    status: NotRequired[KnowledgeBaseTuningStatusEnum]
    settings: NotRequired[dict[str, Any]]
    version: NotRequired[int]
    questions: NotRequired[int]
    kinds: NotRequired[dict[str, int]]
    mrr_default: NotRequired[float | None]
    mrr_tuned: NotRequired[float | None]
    grid: NotRequired[list[TuningGridEntry]]
    level: NotRequired[str]
    requested_by: NotRequired[int | None]
    tuned_at: NotRequired[str]
    seconds: NotRequired[float]


class KnowledgeBaseVersion(TypedDict):
    number: int
    note: str
    changes: dict[str, Any]
    created_by_id: int | None
    created_at: str


class VersionDiffChunk(TypedDict):
    document_id: int
    position: int
    text: str


class VersionDiffDocument(TypedDict):
    document_id: int
    title: str | None
    added: int
    removed: int


class VersionDiff(TypedDict):
    base: int
    target: int
    added: int
    removed: int
    documents: list[VersionDiffDocument]
    added_chunks: list[VersionDiffChunk]
    removed_chunks: list[VersionDiffChunk]


class KnowledgeBaseVersionDetail(TypedDict):
    number: int
    note: str
    changes: dict[str, Any]
    created_by_id: int | None
    created_at: str
    diff: VersionDiff


class KnowledgeBaseVersionList(TypedDict):
    current_version: int
    oldest_retained: int
    results: list[KnowledgeBaseVersion]


class LlmProvider(TypedDict):
    id: int
    name: str
    kind: str
    base_url: str
    default_model: str
    enabled: bool
    timeout_seconds: int
    has_api_key: bool


class LlmProviderList(TypedDict):
    results: list[LlmProvider]


class Member(TypedDict):
    user: _User
    role: str
    created_at: str


class NewOrganisationRequest(TypedDict):
    name: str
    slug: str


class OrgExport(TypedDict):
    id: str
    status: BackupStatusEnum
    size_bytes: int
    sha256: str
    counts: Any
    error: str
    created_at: str
    finished_at: str | None


class PatchedAgentInputRequest(TypedDict):
    name: NotRequired[str]
    description: NotRequired[str]
    agent_type: NotRequired[str]
    provider_id: NotRequired[int | None]
    model: NotRequired[str]
    system_prompt: NotRequired[str]
    sampling: NotRequired[dict[str, Any]]
    knowledge_base_ids: NotRequired[list[int]]
    retrieval: NotRequired[dict[str, Any]]
    tools: NotRequired[list[Any]]
    limits: NotRequired[dict[str, Any]]
    is_enabled: NotRequired[bool]
    org_access: NotRequired[AccessLevelEnum]
    change_note: NotRequired[str]


class PatchedDataPolicyRequest(TypedDict):
    message_retention_days: NotRequired[int | None]
    departed_member_messages: NotRequired[DepartedMemberMessagesEnum]


class PatchedEndpointRequest(TypedDict):
    url: NotRequired[str]
    description: NotRequired[str]
    event_types: NotRequired[list[str]]
    is_active: NotRequired[bool]


class PatchedIamSettingsRequest(TypedDict):
    members_can_create_api_keys: NotRequired[bool]


class PatchedKnowledgeBaseInputRequest(TypedDict):
    name: NotRequired[str]
    description: NotRequired[str]
    embedding_model: NotRequired[str]
    chunk_size: NotRequired[int]
    chunk_overlap: NotRequired[int]
    org_access: NotRequired[AccessLevelEnum]
    versions_retained: NotRequired[int]
    search_settings: NotRequired[dict[str, Any]]
    ocr_language: NotRequired[str]


class PatchedProfileUpdateRequest(TypedDict):
    display_name: NotRequired[str]
    time_zone: NotRequired[str]
    ui_theme: NotRequired[str]
    default_agent_id: NotRequired[int | None]


class PatchedProviderRequest(TypedDict):
    name: NotRequired[str]
    kind: NotRequired[str]
    base_url: NotRequired[str]
    api_key: NotRequired[str]
    default_model: NotRequired[str]
    enabled: NotRequired[bool]
    timeout_seconds: NotRequired[int]


class PatchedRoleRequest(TypedDict):
    role: NotRequired[RoleEnum]


class PatchedTeamRequest(TypedDict):
    name: NotRequired[str]
    description: NotRequired[str]


class Profile(TypedDict):
    id: int
    email: str
    display_name: str
    time_zone: str
    ui_theme: str
    default_agent_id: int | None
    tenant: str
    role: str
    via_api_key: bool


class ProviderRequest(TypedDict):
    name: NotRequired[str]
    kind: NotRequired[str]
    base_url: NotRequired[str]
    api_key: NotRequired[str]
    default_model: NotRequired[str]
    enabled: NotRequired[bool]
    timeout_seconds: NotRequired[int]


class Quota(TypedDict):
    quota: str
    unit: str
    limit: Any
    used: Any
    percent: float | None
    resets_at: str | None


class QuotaOverview(TypedDict):
    tenant: list[Quota]
    user: list[Quota]
    api_key: NotRequired[list[Quota]]


class RefreshRequest(TypedDict):
    refresh: str


class Share(TypedDict):
    id: int
    resource_type: str
    resource_id: int
    team_id: int
    team_name: str
    level: str
    created_at: str


class ResourceSharing(TypedDict):
    resource_type: str
    resource_id: int
    owner_id: int
    org_access: str
    teams: list[Share]


class Restore(TypedDict):
    id: str
    organisation: str
    backup: str | None
    status: RestoreStatusEnum
    counts: Any
    error: str
    created_at: str
    finished_at: str | None


class RestoreCreateRequest(TypedDict):
    new_organisation: NotRequired[NewOrganisationRequest]


class RunCancel(TypedDict):
    run_id: str
    status: str


class RunEvent(TypedDict):
    """One event of a run: the same over SSE (`id:` = seq, `event:` = type, `data:` = this object), long-polling and
    WebSocket. message.end is always the last.
    """

    seq: int
    type: TypeEnum
    run_id: str
    data: dict[str, Any]
    ts: float


class RunEvents(TypedDict):
    run_id: str
    events: list[RunEvent]
    next_after: int
    done: bool


class SearchHit(TypedDict):
    """Listed keys are guaranteed; others (a reranker's score, a newer pipeline's field) pass through unchanged."""

    chunk_id: int
    document_id: int
    document_title: str
    position: int
    text: str
    score: float
    dense_rank: int | None
    dense_score: float | None
    lexical_rank: int | None
    lexical_score: float | None
    rerank_score: float | None
    found_by: list[str]
    page_start: int | None
    page_end: int | None
    section_path: list[str]
    citation: dict[str, Any]


class SearchInputRequest(TypedDict):
    query: str
    top_k: NotRequired[int]
    mode: NotRequired[ModeEnum | None]
    document_ids: NotRequired[list[int] | None]
    metadata: NotRequired[dict[str, Any] | None]
    version: NotRequired[int | None]


class SearchResult(TypedDict):
    knowledge_base_id: int
    query: str
    mode: ModeEnum
    version: int
    reranker: str | None
    reranked: bool
    results: list[SearchHit]


class Session(TypedDict):
    id: int
    ip: str
    user_agent: str
    created_at: str
    last_seen_at: str
    current: bool


class ShareInputRequest(TypedDict):
    resource_type: str
    resource_id: int
    team_id: NotRequired[int | None]
    level: AccessLevelEnum


class SubLimit(TypedDict):
    id: int
    quota: str
    user_id: NotRequired[int | None]
    api_key_id: NotRequired[int | None]
    limit: str
    updated_at: str


class SubLimitRequest(TypedDict):
    quota: str
    user_id: NotRequired[int | None]
    api_key_id: NotRequired[int | None]
    limit: str


class Team(TypedDict):
    id: int
    name: str
    description: NotRequired[str]
    member_count: int
    created_at: str


class TeamMember(TypedDict):
    user_id: int


class TeamMemberRequest(TypedDict):
    user_id: int


class TeamRequest(TypedDict):
    name: str
    description: NotRequired[str]


class TokenObtainInputRequest(TypedDict):
    email: str
    password: str


class TokenPair(TypedDict):
    access: str
    refresh: str


class TokensRevoked(TypedDict):
    revoked: int


class Tool(TypedDict):
    name: str
    description: str
    parameters: dict[str, Any]
    source: str


class ToolCatalog(TypedDict):
    agent_types: list[str]
    tools: list[Tool]
    providers: list[str]
    plugins: dict[str, str]
    custom_tools: list[CustomToolSummary]


class Transfer(TypedDict):
    resource_type: str
    resource_id: int
    new_owner_id: int


class TransferRequest(TypedDict):
    resource_type: str
    resource_id: int
    new_owner_id: int


class UsageByModel(TypedDict):
    model: str
    runs: int
    tokens: int | None
    cost: str


class UsageDay(TypedDict):
    runs: int
    tokens_in: int
    tokens_out: int
    cost: str
    api_calls: int
    date: str


class UsageFigures(TypedDict):
    runs: int
    tokens_in: int
    tokens_out: int
    cost: str
    api_calls: int


class UsageSummary(TypedDict):
    scope: ScopeEnum
    id: int | None
    days: int
    totals: UsageFigures
    daily: list[UsageDay]
    by_model: list[UsageByModel]


class _UserRequest(TypedDict):
    id: int
    email: str
    display_name: str
