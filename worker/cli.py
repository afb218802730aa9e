"""`openpik-worker`: one Celery worker for one GPU, with OpenPik's settings.

Start one per GPU (`--gpu N` makes only that device visible) and give each node the queues
of the model groups it holds (`--queues openpik.default,openpik.anime`).
"""
from __future__ import annotations

import argparse
import os
import socket

from worker.celery_app import DEFAULT_QUEUE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="openpik-worker", description=__doc__)
    parser.add_argument("--queues", default=DEFAULT_QUEUE,
                        help="comma-separated queues: openpik.<group> per catalog model group")
    parser.add_argument("--gpu", type=int, help="the one GPU this worker uses (sets CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--name", help="worker name (default: openpik-<gpu>@<host>)")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)

    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    name = args.name or f"openpik-{'cpu' if args.gpu is None else args.gpu}-{os.getpid()}@{socket.gethostname()}"
    from worker.celery_app import app

    app.worker_main(["worker", "--pool", "prefork", "--concurrency", "1", "--queues", args.queues,
                     "--hostname", name, "--loglevel", args.loglevel, "--without-gossip", "--without-mingle"])


if __name__ == "__main__":
    main()
