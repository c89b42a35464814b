from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("scale_app", "0002_probe_note")]
    operations = [migrations.AddField("probe", "weight", models.IntegerField(null=True))]
