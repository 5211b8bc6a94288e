"""Settings of the test project (tests/django_backend). The database comes from
CONVEYOR_DJANGO_DATABASE (a libpq URL or conninfo string), which the tests
set to a database of their own."""

import os

import django
from psycopg.conninfo import conninfo_to_dict

_db = conninfo_to_dict(os.environ["CONVEYOR_DJANGO_DATABASE"])


def _database(**options: str) -> dict:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", ""),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
        "OPTIONS": options,
    }


SECRET_KEY = "conveyor-tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "conveyor.contrib.django",
    "shop",
]
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("django_tasks")

DATABASES = {
    "default": _database(),
    # A second alias on the same database, as users have them: OPTIONS with a
    # schema-qualified search path that leaves out public and conveyor.
    "tasks": _database(
        options="-c search_path=shop_schema", application_name="shop-tasks"
    ),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TASKS = {
    "default": {
        "BACKEND": "conveyor.contrib.django.ConveyorBackend",
        "QUEUES": ["default", "mail", "ordered", "held", "cli"],
    },
    "other": {
        "BACKEND": "conveyor.contrib.django.ConveyorBackend",
        "QUEUES": ["other", "other-solo"],
        "OPTIONS": {"database": "tasks", "max_retries": 1},
    },
}

LOGGING = {"version": 1, "disable_existing_loggers": False}
