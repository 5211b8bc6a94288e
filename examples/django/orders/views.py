import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from .models import Order
from .tasks import send_confirmation


def place_order(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body or "{}")
    with transaction.atomic():
        order = Order.objects.create(
            email=body["email"], total_cents=body["total_cents"]
        )
        # In the same transaction as the order: no order, no e-mail; and the
        # worker sees the task only once the order is committed.
        result = send_confirmation.enqueue(order.pk)
    return JsonResponse({"order": order.pk, "task": result.id}, status=201)


def task_status(request: HttpRequest, result_id: str) -> JsonResponse:
    result = send_confirmation.get_result(result_id)
    body = {"status": str(result.status), "attempts": result.attempts}
    if result.is_finished and not result.errors:
        body["return_value"] = result.return_value
    return JsonResponse(body)
