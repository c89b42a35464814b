"""Thin DRF views for teams, sharing, ownership, API keys, members and invitations.

Authorization: iam.policy.IsTenantMember (default permission) enforces `required_scope`; services
re-check what depends on the object (owner, share level).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Role
from core.errors import NotFound
from core.openapi import error_responses
from iam.policy import principal_from_request

from . import selectors, services
from .keys import api_key_pending_requests
from .models import ApiScope, Share, ShareLevel


class _UserSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()
    display_name = serializers.CharField()


# --- Teams --------------------------------------------------------------------------------------


class TeamSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    member_count = serializers.IntegerField(read_only=True, default=0)
    created_at = serializers.DateTimeField(read_only=True)


def _team_or_404(team_id):
    team = selectors.team_get(team_id)
    if team is None:
        raise NotFound("Not found.")
    return team


class TeamListApi(APIView):
    required_scope = {"GET": "read", "POST": "admin"}

    @extend_schema(responses=TeamSerializer(many=True))
    def get(self, request):
        return Response(TeamSerializer(selectors.team_list(), many=True).data)

    @extend_schema(request=TeamSerializer, responses={201: TeamSerializer, **error_responses(409)})
    def post(self, request):
        data = TeamSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        team = services.team_create(principal=principal_from_request(request), **data.validated_data)
        return Response(TeamSerializer(selectors.team_get(team.pk)).data, status=status.HTTP_201_CREATED)


class TeamDetailApi(APIView):
    required_scope = {"GET": "read", "PATCH": "admin", "DELETE": "admin"}

    @extend_schema(responses=TeamSerializer)
    def get(self, request, team_id):
        return Response(TeamSerializer(_team_or_404(team_id)).data)

    @extend_schema(request=TeamSerializer, responses={200: TeamSerializer, **error_responses(409)})
    def patch(self, request, team_id):
        team = _team_or_404(team_id)
        data = TeamSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.team_update(principal=principal_from_request(request), team=team, **data.validated_data)
        return Response(TeamSerializer(selectors.team_get(team.pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, team_id):
        services.team_delete(principal=principal_from_request(request), team=_team_or_404(team_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class TeamMemberSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()


class TeamMemberListApi(APIView):
    required_scope = {"GET": "read", "POST": "admin"}

    @extend_schema(responses=_UserSerializer(many=True))
    def get(self, request, team_id):
        team = _team_or_404(team_id)
        return Response(_UserSerializer([m.user for m in selectors.team_member_list(team)], many=True).data)

    @extend_schema(request=TeamMemberSerializer, responses={201: TeamMemberSerializer})
    def post(self, request, team_id):
        team = _team_or_404(team_id)
        data = TeamMemberSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.team_member_add(principal=principal_from_request(request), team=team, **data.validated_data)
        return Response(data.validated_data, status=status.HTTP_201_CREATED)


class TeamMemberDetailApi(APIView):
    required_scope = "admin"

    @extend_schema(responses={204: None})
    def delete(self, request, team_id, user_id):
        team = _team_or_404(team_id)
        services.team_member_remove(principal=principal_from_request(request), team=team, user_id=user_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Shares and ownership -----------------------------------------------------------------------


class ShareInputSerializer(serializers.Serializer):
    resource_type = serializers.CharField(max_length=32)
    resource_id = serializers.IntegerField()
    team_id = serializers.IntegerField(allow_null=True, required=False, default=None)
    level = serializers.ChoiceField(choices=[*ShareLevel.values, "none"])


class ShareSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    resource_type = serializers.CharField()
    resource_id = serializers.IntegerField()
    team_id = serializers.IntegerField()
    team_name = serializers.CharField(source="team.name")
    level = serializers.CharField()
    created_at = serializers.DateTimeField()


class ResourceSharingSerializer(serializers.Serializer):
    resource_type = serializers.CharField()
    resource_id = serializers.IntegerField()
    owner_id = serializers.IntegerField()
    org_access = serializers.CharField()
    teams = ShareSerializer(many=True)


class ShareListApi(APIView):
    """GET ?resource_type=agent&resource_id=7: who the resource is shared with. POST: share / unshare."""

    required_scope = {"GET": "read", "POST": "write"}

    @extend_schema(
        parameters=[
            OpenApiParameter("resource_type", str, required=True, enum=["agent", "knowledge_base"]),
            OpenApiParameter("resource_id", int, required=True),
        ],
        responses={200: ResourceSharingSerializer, **error_responses(404)},
    )
    def get(self, request):
        resource_type = request.query_params.get("resource_type", "")
        resource_id = request.query_params.get("resource_id", "")
        obj = services.shared_resource_get(
            principal=principal_from_request(request),
            resource_type=resource_type,
            resource_id=resource_id,
            action="view",
        )
        data = {
            "resource_type": resource_type,
            "resource_id": obj.pk,
            "owner_id": obj.owner_id,
            "org_access": obj.org_access,
            "teams": selectors.share_list_for_resource(resource_type, obj.pk),
        }
        return Response(ResourceSharingSerializer(data).data)

    @extend_schema(request=ShareInputSerializer, responses={200: ShareSerializer, 204: None, **error_responses(404)})
    def post(self, request):
        data = ShareInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        share = services.share_set(principal=principal_from_request(request), **data.validated_data)
        if share is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(ShareSerializer(share).data)


class ShareDetailApi(APIView):
    required_scope = "write"

    @extend_schema(responses={204: None})
    def delete(self, request, share_id):
        share = Share.objects.filter(pk=share_id).first()
        if share is None:
            raise NotFound("Not found.")
        services.share_delete(principal=principal_from_request(request), share=share)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TransferSerializer(serializers.Serializer):
    resource_type = serializers.CharField(max_length=32)
    resource_id = serializers.IntegerField()
    new_owner_id = serializers.IntegerField()


class OwnershipTransferApi(APIView):
    required_scope = "write"

    @extend_schema(request=TransferSerializer, responses={200: TransferSerializer, **error_responses(404)})
    def post(self, request):
        data = TransferSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.resource_transfer_ownership(principal=principal_from_request(request), **data.validated_data)
        return Response(data.validated_data)


# --- API keys -----------------------------------------------------------------------------------


class ApiKeySerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=100)
    prefix = serializers.CharField(read_only=True)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ApiScope.values), allow_empty=False)
    agent_ids = serializers.ListField(child=serializers.IntegerField(), allow_null=True, required=False, default=None)
    expires_at = serializers.DateTimeField(allow_null=True, required=False, default=None)
    created_by = _UserSerializer(read_only=True)
    revoked_at = serializers.DateTimeField(read_only=True, allow_null=True)
    last_used_at = serializers.DateTimeField(read_only=True, allow_null=True)
    request_count = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(read_only=True)

    def get_request_count(self, key) -> int:
        return key.request_count + api_key_pending_requests(key.pk)

    def to_representation(self, key):
        data = super().to_representation(key)
        data["agent_ids"] = None if key.all_agents else list(key.agent_ids)
        return data


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The full key. Shown only in this response.")


class ApiKeyListApi(APIView):
    """Admins list every key; members their own. Creating: admins, or members if the organisation allows."""

    required_scope = {"GET": "read", "POST": "write"}
    self_service = True  # a member's own keys; the service enforces roles and the tenant setting

    @extend_schema(responses=ApiKeySerializer(many=True))
    def get(self, request):
        keys = selectors.api_key_list(principal=principal_from_request(request))
        return Response(ApiKeySerializer(keys, many=True).data)

    @extend_schema(request=ApiKeySerializer, responses={201: ApiKeyCreatedSerializer})
    def post(self, request):
        data = ApiKeySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key, raw = services.api_key_create(principal=principal_from_request(request), **data.validated_data)
        body = ApiKeySerializer(key).data
        body["key"] = raw
        return Response(body, status=status.HTTP_201_CREATED)


class ApiKeyDetailApi(APIView):
    required_scope = {"GET": "read", "DELETE": "write"}
    self_service = True

    @extend_schema(responses=ApiKeySerializer)
    def get(self, request, key_id):
        key = services.api_key_get_for_principal(principal_from_request(request), key_id)
        return Response(ApiKeySerializer(key).data)

    @extend_schema(responses={200: ApiKeySerializer}, description="Revoke the key (immediately): the revoked key.")
    def delete(self, request, key_id):
        principal = principal_from_request(request)
        key = services.api_key_revoke(principal=principal, key=services.api_key_get_for_principal(principal, key_id))
        return Response(ApiKeySerializer(key).data)


class IamSettingsSerializer(serializers.Serializer):
    members_can_create_api_keys = serializers.BooleanField()


class IamSettingsApi(APIView):
    required_scope = {"GET": "read", "PATCH": "admin"}

    @extend_schema(responses=IamSettingsSerializer)
    def get(self, request):
        return Response(IamSettingsSerializer(services.iam_settings_get()).data)

    @extend_schema(request=IamSettingsSerializer, responses=IamSettingsSerializer)
    def patch(self, request):
        data = IamSettingsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        obj = services.iam_settings_update(principal=principal_from_request(request), **data.validated_data)
        return Response(IamSettingsSerializer(obj).data)


# --- Members and invitations --------------------------------------------------------------------


class MemberSerializer(serializers.Serializer):
    user = _UserSerializer()
    role = serializers.CharField()
    created_at = serializers.DateTimeField()


class RoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.values)


class MemberListApi(APIView):
    required_scope = "read"

    @extend_schema(responses=MemberSerializer(many=True))
    def get(self, request):
        return Response(MemberSerializer(selectors.member_list(request.tenant), many=True).data)


class MemberDetailApi(APIView):
    required_scope = {"PATCH": "admin", "DELETE": "admin"}

    @extend_schema(request=RoleSerializer, responses={200: MemberSerializer, **error_responses(409)})
    def patch(self, request, user_id):
        data = RoleSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.membership_role_change(
            principal=principal_from_request(request), user_id=user_id, role=data.validated_data["role"]
        )
        return Response(MemberSerializer(membership).data)

    @extend_schema(responses={204: None, **error_responses(409)})
    def delete(self, request, user_id):
        services.membership_remove(principal=principal_from_request(request), user_id=user_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.values, default=Role.USER)
    invited_by = _UserSerializer(read_only=True)
    expires_at = serializers.DateTimeField(read_only=True)
    accepted_at = serializers.DateTimeField(read_only=True, allow_null=True)
    revoked_at = serializers.DateTimeField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)


class InvitationListApi(APIView):
    required_scope = "admin"

    @extend_schema(responses=InvitationSerializer(many=True))
    def get(self, request):
        return Response(InvitationSerializer(selectors.invitation_list(), many=True).data)

    @extend_schema(request=InvitationSerializer, responses={201: InvitationSerializer, **error_responses(409)})
    def post(self, request):
        data = InvitationSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        invitation = services.invitation_create(principal=principal_from_request(request), **data.validated_data)
        return Response(InvitationSerializer(invitation).data, status=status.HTTP_201_CREATED)


class InvitationDetailApi(APIView):
    required_scope = "admin"

    @extend_schema(responses={204: None})
    def delete(self, request, invitation_id):
        invitation = selectors.invitation_get(invitation_id)
        if invitation is None:
            raise NotFound("Not found.")
        services.invitation_revoke(principal=principal_from_request(request), invitation=invitation)
        return Response(status=status.HTTP_204_NO_CONTENT)
