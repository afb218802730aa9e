"""`openpik-api`: the gateway under uvicorn, on OPENPIK_HOST:OPENPIK_PORT.

One process per core by default: a gateway process spends its CPU on parsing, signatures and
validation under one GIL, and the processes share nothing but Redis (key files are re-read
when they change, rate limits and idempotency live in Redis). uvicorn's access log is off by
default: every POST / already writes one JSON line (api.metrics); --access-log adds uvicorn's.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from openpik.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="openpik-api", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="gateway processes (default: one per core; they share nothing but Redis)",
    )
    parser.add_argument("--access-log", action="store_true", help="also uvicorn's access log line per request")
    args = parser.parse_args(argv)
    uvicorn.run(
        "api.app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=args.access_log,
        log_level="info",
    )


if __name__ == "__main__":
    main()
