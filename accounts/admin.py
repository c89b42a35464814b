"""Django admin (public host, platform staff only): people and their memberships."""

from django.contrib import admin
from django.http import HttpRequest

from .models import Membership, User


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ("tenant", "role", "created_at")
    readonly_fields = ("created_at",)


@admin.register(User)
class UserAdmin(admin.ModelAdmin):
    list_display = ("email", "display_name", "is_active", "is_staff", "date_joined", "last_login")
    list_filter = ("is_active", "is_staff")
    search_fields = ("email", "display_name")
    exclude = ("password", "user_permissions", "groups")  # passwords change through allauth, never here
    readonly_fields = ("date_joined", "last_login")
    inlines = [MembershipInline]

    def has_delete_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        # Accounts end as tombstones (accounts.services.user_delete), never as deleted rows: every organisation's
        # schema keeps user ids without a database foreign key (core/models.py) that would stop the delete.
        return False


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("role", "tenant")
    search_fields = ("user__email", "tenant__slug")
    autocomplete_fields = ("user",)
