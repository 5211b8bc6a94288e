"""The example's job: `conveyor worker jobs.py -q mail` runs it on the
worker's event loop, many at once."""

from __future__ import annotations

import asyncio

import conveyor


class SendReceipt(conveyor.Job):
    queue = "mail"
    retry_interval = 10.0

    async def run(self, order_id: int) -> None:
        await asyncio.sleep(0.2)  # stands for an HTTP call to the mail provider
        async with self.aconnection() as conn:
            await conn.execute(
                "UPDATE orders SET receipt_sent_at = now() WHERE id = %s", (order_id,)
            )
            # The update and the job's end commit together: exactly once.
            await self.adestroy(conn=conn)
