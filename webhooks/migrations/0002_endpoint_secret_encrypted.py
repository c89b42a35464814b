"""Webhook signing secrets are encrypted at rest (core.crypto), like provider keys: existing secrets are
encrypted in place, so receivers keep verifying with the secret they already have."""

from django.db import migrations, models

from core.crypto import decrypt_str, encrypt_str


def encrypt_secrets(apps, schema_editor):
    WebhookEndpoint = apps.get_model("webhooks", "WebhookEndpoint")
    for endpoint in WebhookEndpoint.objects.only("pk", "secret"):
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(secret_encrypted=encrypt_str(endpoint.secret))


def decrypt_secrets(apps, schema_editor):
    WebhookEndpoint = apps.get_model("webhooks", "WebhookEndpoint")
    for endpoint in WebhookEndpoint.objects.only("pk", "secret_encrypted"):
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(secret=decrypt_str(endpoint.secret_encrypted))


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="webhookendpoint",
            name="secret_encrypted",
            field=models.TextField(default=""),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name="webhookendpoint", name="secret", field=models.CharField(max_length=80, default="")
        ),
        migrations.RunPython(encrypt_secrets, decrypt_secrets, elidable=False),
        migrations.RemoveField(model_name="webhookendpoint", name="secret"),
    ]
