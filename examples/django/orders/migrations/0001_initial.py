from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = [("conveyor", "0001_conveyor_schema")]  # noqa: RUF012
    operations = [  # noqa: RUF012
        migrations.CreateModel(
            name="Order",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("email", models.EmailField(max_length=254)),
                ("total_cents", models.IntegerField()),
                ("confirmed", models.BooleanField(default=False)),
            ],
        ),
    ]
