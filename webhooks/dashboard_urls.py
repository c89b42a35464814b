"""Dashboard page routes (mounted at / on tenant hosts)."""

urlpatterns: list = []
