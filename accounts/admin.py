"""Django admin (public host, platform staff only): people and their memberships."""

from django.contrib import admin

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


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("role", "tenant")
    search_fields = ("user__email", "tenant__slug")
    autocomplete_fields = ("user",)
