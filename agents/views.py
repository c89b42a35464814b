from django.shortcuts import render

from core.access import member_required


@member_required
def dashboard_home(request):
    return render(request, "dashboard/home.html", {"membership": request.membership})
