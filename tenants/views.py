from django.shortcuts import redirect, render

from core.errors import DomainError
from core.tenancy import tenant_url

from .forms import SignupForm
from .selectors import tenant_get_by_slug
from .services import tenant_create


def landing(request):
    return render(request, "public/landing.html")


def signup(request):
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            tenant = tenant_create(
                name=form.cleaned_data["name"],
                slug=form.cleaned_data["slug"],
                owner_email=form.cleaned_data["email"],
                owner_password=form.cleaned_data["password"],
            )
        except DomainError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            return redirect("signup_done", slug=tenant.slug)
    return render(request, "public/signup.html", {"form": form}, status=400 if form.errors else 200)


def signup_done(request, slug: str):
    tenant = tenant_get_by_slug(slug=slug)
    if tenant is None:
        return redirect("signup")
    return render(
        request, "public/signup_done.html", {"tenant": tenant, "login_url": tenant_url(tenant, "/accounts/login/")}
    )
