"""The baseline: a bare httpx.AsyncClient loop sending a job file's prompts, nothing else."""

from __future__ import annotations

import json
import sys

import anyio
import anyio.abc
import httpx


async def main(path: str, base_url: str, concurrency: int) -> None:
    send, receive = anyio.create_memory_object_stream[dict[str, object]](concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, headers={"authorization": "Bearer k"}
    ) as client:

        async def worker(jobs: anyio.abc.ObjectReceiveStream[dict[str, object]]) -> None:
            async with jobs:
                async for job in jobs:
                    body = {
                        "model": job["model"],
                        "messages": [{"role": "user", "content": job["prompt"]}],
                    }
                    for attempt in range(3):  # a kept-alive connection may be closed
                        try:
                            r = await client.post("chat/completions", json=body)
                            break
                        except httpx.TransportError:
                            if attempt == 2:
                                raise
                    r.raise_for_status()
                    r.json()

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker, receive.clone())
            receive.close()
            async with send:
                with open(path) as f:  # noqa: ASYNC230 (as batcher reads: in the loop)
                    for line in f:
                        await send.send(json.loads(line))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
