from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core.tenancy import tenant_url

from .services import tenant_create


class TenantCreateApi(APIView):
    """Create an organisation. Signed in: you become its admin. Anonymous: give the owner's email and password."""

    permission_classes = [AllowAny]

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        slug = serializers.CharField(max_length=40)
        owner_email = serializers.CharField(required=False, allow_blank=True)
        owner_password = serializers.CharField(required=False, allow_blank=True, write_only=True)

    class OutputSerializer(serializers.Serializer):
        name = serializers.CharField()
        slug = serializers.CharField()
        url = serializers.CharField()

    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        owner = request.user if request.user.is_authenticated else None
        tenant = tenant_create(
            name=data.validated_data["name"],
            slug=data.validated_data["slug"],
            owner=owner,
            owner_email=data.validated_data.get("owner_email"),
            owner_password=data.validated_data.get("owner_password"),
        )
        out = {"name": tenant.name, "slug": tenant.slug, "url": tenant_url(tenant)}
        return Response(self.OutputSerializer(out).data, status=status.HTTP_201_CREATED)
