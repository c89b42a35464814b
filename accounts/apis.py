from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView


class MeApi(APIView):
    """The caller and their role in this organisation."""

    class OutputSerializer(serializers.Serializer):
        email = serializers.EmailField()
        display_name = serializers.CharField()
        tenant = serializers.CharField()
        role = serializers.CharField()

    def get(self, request):
        data = {
            "email": request.user.email,
            "display_name": request.user.display_name,
            "tenant": request.tenant.slug,
            "role": request.membership.role,
        }
        return Response(self.OutputSerializer(data).data)
