"""`conveyor limits`: list, set (limits and throttle) and delete the limits
of concurrency keys, in-process (CliRunner)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import psycopg
from click.testing import CliRunner
from conveyor.cli import cli


def invoke(db_url: str, *args: str) -> Any:
    return CliRunner().invoke(cli, [*args, "--database-url", db_url])


def test_set_list_and_delete_limits(db_url: str, conn: psycopg.Connection[Any]) -> None:
    result = invoke(
        db_url, "limits", "set", "api", "--throttle", "10", "--per", "1 minute"
    )
    assert result.exit_code == 0, result.output
    assert result.output == "set: api: throttle=10/00:01:00\n"
    result = invoke(
        db_url,
        "limits",
        "set",
        "sync-*",
        "--perform-limit",
        "2",
        "--enqueue-limit",
        "5",
    )
    assert result.output == "set: sync-*: perform_limit=2 enqueue_limit=5\n", (
        result.output
    )
    assert conn.execute(
        "SELECT key, perform_limit, enqueue_limit, perform_throttle, throttle_period"
        " FROM conveyor.concurrency_limits ORDER BY key"
    ).fetchall() == [
        ("api", None, None, 10, timedelta(minutes=1)),
        ("sync-*", 2, 5, None, None),
    ]
    listed = invoke(db_url, "limits")
    assert listed.exit_code == 0, listed.output
    assert (
        listed.output
        == "api: throttle=10/00:01:00\nsync-*: perform_limit=2 enqueue_limit=5\n"
    )
    as_json = json.loads(invoke(db_url, "limits", "--json").output)
    assert as_json[0] == {
        "key": "api",
        "perform_limit": None,
        "enqueue_limit": None,
        "perform_throttle": 10,
        "throttle_period": "00:01:00",
    }
    assert invoke(db_url, "limits", "delete", "api").output == "deleted: api\n"
    assert invoke(db_url, "limits", "delete", "api").output == "no limits: api\n"
    assert (
        invoke(db_url, "limits").output == "sync-*: perform_limit=2 enqueue_limit=5\n"
    )


def test_bad_limits_are_one_line_errors(db_url: str) -> None:
    result = invoke(db_url, "limits", "set", "api", "--throttle", "10")
    assert result.exit_code == 1
    assert "give --throttle and --per together" in result.output
    result = invoke(db_url, "limits", "set", "api")
    assert result.exit_code == 1
    assert "give perform_limit, enqueue_limit or perform_throttle" in result.output
    result = invoke(db_url, "limits", "set", "api", "--throttle", "2", "--per", "-1 s")
    assert result.exit_code == 1
    assert "throttle_period must be positive" in result.output
