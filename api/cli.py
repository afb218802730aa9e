"""`openpik-api`: the gateway under uvicorn, on OPENPIK_HOST:OPENPIK_PORT."""

from __future__ import annotations

import argparse

import uvicorn

from openpik.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="openpik-api", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--workers", type=int, default=1, help="gateway processes (they share nothing but Redis)")
    args = parser.parse_args(argv)
    uvicorn.run("api.app:app", host=args.host, port=args.port, workers=args.workers, log_level="info")


if __name__ == "__main__":
    main()
