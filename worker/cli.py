"""`openpik-worker`: one Celery worker for one GPU, with OpenPik's settings.

Start one per GPU (`--gpu N` makes only that device visible) and give each node the queues
of the model groups it holds (`--queues openpik.default,openpik.anime`). Without --queues a
worker serves openpik.default and the webhooks' openpik.callbacks, so one node needs nothing
more; a cluster can leave callbacks to workers of their own (`--queues openpik.callbacks`: no
GPU, no model loaded). Each serves its Prometheus metrics on `--metrics-port` and logs task
state changes as JSON lines.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import tempfile

from openpik.logs import configure_json_logging
from openpik.routing import DEFAULT_WORKER_QUEUES
from openpik.settings import get_settings
from worker import affinity
from worker.allocator import keep_freed_memory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="openpik-worker", description=__doc__)
    parser.add_argument(
        "--queues",
        default=",".join(DEFAULT_WORKER_QUEUES),
        help="comma-separated queues: openpik.<group> per catalog model group, openpik.callbacks for webhooks"
        " (default: %(default)s)",
    )
    parser.add_argument("--gpu", type=int, help="the one GPU this worker uses (sets CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--name", help="worker name (default: openpik-<gpu>@<host>)")
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus metrics port (default OPENPIK_WORKER_METRICS_PORT + the --gpu index; 0: off)",
    )
    args = parser.parse_args(argv)

    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    name = args.name or f"openpik-{'cpu' if args.gpu is None else args.gpu}-{os.getpid()}@{socket.gethostname()}"
    from worker.celery_app import app

    configure_json_logging("openpik.worker", args.loglevel.upper())
    if get_settings().keep_freed_memory:
        keep_freed_memory()
    queues = args.queues.split(",")
    if get_settings().affinity_routing:  # its own direct queues first (worker/affinity.py)
        queues = affinity.configure(queues, name)
    with exported_metrics(metrics_port(args.metrics_port, args.gpu)):
        app.worker_main(
            [
                "worker",
                "--queues",
                ",".join(queues),
                "--hostname",
                name,
                "--loglevel",
                args.loglevel,
                "--without-gossip",
                "--without-mingle",
            ]
        )


def metrics_port(requested: int | None, gpu: int | None) -> int:
    """--metrics-port, else the setting plus the GPU index, so one node's workers (one per GPU) never collide."""
    if requested is not None:
        return requested
    base = get_settings().worker_metrics_port
    return base + (gpu or 0) if base else 0


@contextlib.contextmanager
def exported_metrics(port: int):
    """A fresh folder for every process's metrics and the parent's exporter, removed at shutdown.

    Port 0 writes nothing. A busy port costs the metrics, not the worker: it still serves its queues.
    """
    if not port:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="openpik-metrics-") as folder:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder  # before anything imports prometheus_client
        from worker import metrics

        try:
            metrics.serve(port)
        except OSError as exc:
            logging.getLogger("openpik.worker").warning("metrics not served on port %d: %s", port, exc)
        yield


if __name__ == "__main__":
    main()
