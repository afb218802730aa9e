"""The gateway benchmark's baseline: a bare FastAPI endpoint that parses the same JSON body.

Served by the same uvicorn as the gateway, so what the gateway costs beyond it is its own
work: strict body parsing, the signature, validation, image decoding, the catalog, and the
Redis transaction plus Celery message that queue the task.
"""

from __future__ import annotations

from fastapi import FastAPI, Request

app = FastAPI()


@app.post("/")
async def submit(request: Request) -> dict:
    body = await request.json()
    return {"RetCode": 0, "Action": body.get("Action"), "Message": "", "TaskUID": ""}


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}
