"""shop_log: a table the tasks and signal receivers write to, so the tests
see what happened in the worker process (created by the tests' conftest)."""

from django.db import connection


def write(event: str, what: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO shop_log (event, what) VALUES (%s, %s)", [event, what]
        )
