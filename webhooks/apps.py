from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"

    def ready(self) -> None:
        from core.crypto import register_secret_rotation
        from core.events import register_sink

        from .dispatch import webhooks_fanout_event
        from .services import endpoint_secrets_rotate

        # Every published event is offered to the tenant's webhook endpoints (core.events imports no app).
        register_sink(webhooks_fanout_event)
        register_secret_rotation("webhooks", endpoint_secrets_rotate)  # signing secrets (rotate_secrets)
