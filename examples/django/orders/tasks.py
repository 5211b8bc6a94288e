"""The example's tasks: plain functions decorated with Django's @task."""

import django

if django.VERSION >= (6, 0):
    from django.tasks import task
else:
    from django_tasks import task

from .models import Order


@task(queue_name="mail", priority=10)
def send_confirmation(order_id: int) -> dict:
    order = Order.objects.get(pk=order_id)
    # ... send the e-mail here ...
    Order.objects.filter(pk=order_id).update(confirmed=True)
    return {"order": order.pk, "to": order.email}


@task(takes_context=True)
def charge(context, order_id: int) -> str:
    # context.attempt is 1, 2, 3 ...: max_retries 2 allows three attempts
    return f"charged order {order_id} (attempt {context.attempt})"
