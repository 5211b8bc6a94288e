"""The example project's settings: one database (DATABASE_URL, a libpq URL),
conveyor's app and its task backend."""

import os

import django
from psycopg.conninfo import conninfo_to_dict

_db = conninfo_to_dict(os.environ.get("DATABASE_URL", "postgresql:///conveyor_example"))

SECRET_KEY = "example-only"
DEBUG = True
USE_TZ = True
ROOT_URLCONF = "mysite.urls"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "conveyor.contrib.django",  # the migration that installs conveyor's schema
    "orders",
]
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("django_tasks")  # the backport, on Django 5.2

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", ""),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
        # Prepared statements (psycopg's default threshold) make an enqueue
        # ~40 us cheaper on the server; leave this out behind a
        # transaction-mode pooler (docs/how-to/django.md).
        "OPTIONS": {"prepare_threshold": 5},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TASKS = {
    "default": {
        "BACKEND": "conveyor.contrib.django.ConveyorBackend",
        "QUEUES": ["default", "mail"],
        "OPTIONS": {"database": "default", "max_retries": 2},
    }
}
