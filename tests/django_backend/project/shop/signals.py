"""Receivers of the tasks framework's signals: each writes a shop_log row,
in whichever process sends the signal (the test's for task_enqueued, the
worker's for task_started and task_finished)."""

import os

from conveyor.contrib.django.compat import task_enqueued, task_finished, task_started
from django.dispatch import receiver

from .log import write


def _what(task_result) -> str:
    return f"{task_result.id} {task_result.status} {task_result.task.name} pid={os.getpid()}"


@receiver(task_enqueued)
def on_enqueued(sender, task_result, **kwargs):
    write("enqueued", _what(task_result))


@receiver(task_started)
def on_started(sender, task_result, **kwargs):
    write("started", _what(task_result))


@receiver(task_finished)
def on_finished(sender, task_result, **kwargs):
    write("finished", _what(task_result))
