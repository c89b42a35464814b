from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("scale_app", "0001_initial")]
    operations = [migrations.AddField("probe", "note", models.CharField(max_length=50, default="", blank=True))]
