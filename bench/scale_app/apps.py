from django.apps import AppConfig


class ScaleAppConfig(AppConfig):
    name = "bench.scale_app"
    label = "scale_app"
