from typing import Any

from django import forms

from core.errors import DomainError
from core.tenancy import tenant_domain_for

from .services import owner_email_validate, owner_password_validate, slug_validate


class SignupForm(forms.Form):
    """Create an organisation. Every field is checked on each submit (the services' own rules), so the page shows
    every error at once. A signed-in person becomes the owner themselves: no email or password fields."""

    name = forms.CharField(label="Organisation name", max_length=100)
    slug = forms.CharField(label="Address", max_length=40)
    email = forms.EmailField(label="Your email")
    password = forms.CharField(label="Password", widget=forms.PasswordInput, help_text="At least 10 characters.")

    def __init__(self, *args: Any, signed_in: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        example = tenant_domain_for("your-org")
        self.fields["slug"].help_text = f"Lowercase letters, digits and hyphens: your organisation lives at {example}"
        if signed_in:
            del self.fields["email"], self.fields["password"]

    def clean_slug(self) -> str:
        try:
            return slug_validate(self.cleaned_data["slug"])
        except DomainError as exc:
            raise forms.ValidationError(exc.message) from exc

    def clean_email(self) -> str:
        try:
            return owner_email_validate(self.cleaned_data["email"])
        except DomainError as exc:
            raise forms.ValidationError(exc.message) from exc

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("password"):
            # The password may not resemble the address: checked against whatever address was typed.
            try:
                owner_password_validate(email=self.data.get("email", ""), password=cleaned["password"])
            except DomainError as exc:
                self.add_error("password", exc.message)
        return cleaned
