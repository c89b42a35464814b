from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"

    def ready(self) -> None:
        from core.events import register_sink

        from .dispatch import webhooks_fanout_event

        # Every published event is offered to the tenant's webhook endpoints (core.events imports no app).
        register_sink(webhooks_fanout_event)
