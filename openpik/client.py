"""A Python client for OpenPik (and PICPIK): signed calls, task polling, result downloads.

    client = OpenPikClient("http://127.0.0.1:8000", "PK", "SK")
    paths = client.generate(MainModelId=1, PositivePrompts=["an apple"], Steps=20, out_dir="var/out")

Needs httpx (`pip install 'openpik[client]'`) but neither the gateway nor torch: signing
comes from openpik.signing, the same code the gateway verifies with.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from PIL import Image

from openpik.signing import SIGNATURE_FIELD, sign
from openpik.vocabulary import ENDED_STATUSES, TaskStatus

ProgressCallback = Callable[[str, int], None]

# Fields GenerateImg2Img/GenerateTxt2Img require but for which one value suits most calls,
# so a caller names only what matters (model, prompts, size, steps). Any of them can be passed.
LEGACY_DEFAULTS: dict[str, Any] = {
    "ModelType": "combined_model",
    "BatchSize": 1,
    "CfgScale": 7.0,
    "Seed": -1,
    "Sampler": "Euler a",
    "ClipSkip": 1,
    "TranslatePrompt": False,
}
LEGACY_ACTIONS = ("GenerateImg2Img", "GenerateTxt2Img")


class PicpikError(Exception):
    """The API answered RetCode != 0; ``retcode`` is PICPIK's code, ``message`` names the problem."""

    def __init__(self, retcode: int, message: str):
        super().__init__(f"RetCode {retcode}: {message}")
        self.retcode = retcode
        self.message = message


class TaskFailed(PicpikError):
    """The task ended as Error: ``retcode`` is its TaskErrorCode (worker/errors.py has the table)."""


class OpenPikClient:
    """One API key against one endpoint; reuses its HTTP connection (use it as a context manager)."""

    def __init__(
        self,
        base_url: str,
        public_key: str,
        private_key: str,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ):
        """``transport``: httpx's, e.g. ``httpx.HTTPTransport(retries=3)`` to retry failed connections."""
        self.public_key = public_key
        self._private_key = private_key
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, action: str, **fields: Any) -> dict[str, Any]:
        """One signed action; the response body, or PicpikError when RetCode is not 0."""
        body = {"Action": action, "PublicKey": self.public_key, **fields}
        body[SIGNATURE_FIELD] = sign(body, self._private_key)
        answer = _envelope(self._http.post("/", json=body))
        if answer.get("RetCode") != 0:
            raise PicpikError(answer.get("RetCode", -1), answer.get("Message", ""))
        return answer

    def submit(self, **fields: Any) -> str:
        """Queue a generation and return its TaskUID.

        Without Action, a ReferenceImage makes it GenerateImg2Img, otherwise GenerateTxt2Img;
        the legacy actions get LEGACY_DEFAULTS for whatever required field is not given.
        """
        action = fields.pop("Action", "GenerateImg2Img" if fields.get("ReferenceImage") else "GenerateTxt2Img")
        if action in LEGACY_ACTIONS:
            fields = LEGACY_DEFAULTS | fields
        task_uid: str = self.call(action, **fields)["TaskUID"]
        return task_uid

    def wait(
        self, task_uid: str, on_progress: ProgressCallback | None = None, poll_s: float = 0.5, timeout_s: float = 600
    ) -> dict[str, Any]:
        """Poll GetGenerateTaskDetail until Finished or Error and return that detail.

        ``on_progress(status, percent)`` is called whenever either changes; TimeoutError past
        ``timeout_s`` (the task itself goes on).
        """
        deadline = time.monotonic() + timeout_s
        seen = None
        while True:
            detail = self.call("GetGenerateTaskDetail", TaskUID=task_uid)
            state = (detail["TaskStatus"], detail.get("Progress", 0))
            if on_progress and state != seen:
                on_progress(*state)
            seen = state
            if detail["TaskStatus"] in ENDED_STATUSES:
                return detail
            if time.monotonic() + poll_s > deadline:
                raise TimeoutError(f"task {task_uid} still {detail['TaskStatus']} after {timeout_s} s")
            time.sleep(poll_s)

    def download(self, detail: dict[str, Any], out_dir: str | Path) -> list[Path]:
        """Save a Finished task's images as ``<TaskUID>-<n>.png``; TaskFailed for an Error task."""
        if detail["TaskStatus"] == TaskStatus.ERROR:
            raise TaskFailed(detail["TaskErrorCode"], detail["TaskErrorMsg"])
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for url in detail["FinalPictureUrls"]:
            response = self._http.get(url)
            response.raise_for_status()
            path = out / f"{detail['TaskUID']}-{url.rsplit('/', 1)[-1]}"
            path.write_bytes(response.content)
            paths.append(path)
        return paths

    def generate(
        self,
        out_dir: str | Path,
        on_progress: ProgressCallback | None = None,
        poll_s: float = 0.5,
        timeout_s: float = 600,
        **fields: Any,
    ) -> list[Path]:
        """submit + wait + download: the saved image paths."""
        task_uid = self.submit(**fields)
        return self.download(self.wait(task_uid, on_progress, poll_s, timeout_s), out_dir)


def image_to_base64(image: str | Path | Image.Image) -> str:
    """A file's bytes as they are (PNG, JPEG, WEBP, BMP or GIF), or a PIL image as PNG, in base64."""
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        data = buffer.getvalue()
    else:
        data = Path(image).read_bytes()
    return base64.b64encode(data).decode("ascii")


def _envelope(response: httpx.Response) -> dict[str, Any]:
    """The JSON envelope, whatever the HTTP status (errors carry one too); HTTPStatusError otherwise."""
    try:
        answer = response.json()
    except ValueError:
        response.raise_for_status()
        raise PicpikError(-1, f"not a JSON response (HTTP {response.status_code})") from None
    if not isinstance(answer, dict):
        raise PicpikError(-1, f"not a JSON object (HTTP {response.status_code})")
    return answer
