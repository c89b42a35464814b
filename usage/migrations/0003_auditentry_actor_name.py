from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0002_audit_immutable_trigger"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditentry",
            name="actor_name",
            field=models.CharField(blank=True, max_length=200),
        ),
    ]
