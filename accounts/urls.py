"""API routes (mounted under /api/v1/ on tenant hosts)."""

urlpatterns: list = []
