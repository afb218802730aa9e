"""openpik.client: the spec's signatures as it sends them, and a real generation through it."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from PIL import Image

import api.signature
import openpik.signing
from openpik.client import OpenPikClient, PicpikError, TaskFailed, image_to_base64
from tests.stack import KEY_A
from tests.test_signature import VECTORS


def recording_client(public_key: str, private_key: str, answer: dict, sent: list[dict]) -> OpenPikClient:
    """A client whose HTTP goes to a function that records each body and returns ``answer``."""

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=answer)

    return OpenPikClient("http://openpik.test", public_key, private_key, transport=httpx.MockTransport(handle))


def test_the_gateway_verifies_with_the_code_the_client_signs_with():
    assert api.signature.sign is openpik.signing.sign


@pytest.mark.parametrize(("body", "private_key", "expected_string", "expected_signature"), VECTORS)
def test_the_client_sends_the_spec_signatures(body, private_key, expected_string, expected_signature):
    sent: list[dict] = []
    fields = {k: v for k, v in body.items() if k not in ("Action", "PublicKey")}
    with recording_client(body["PublicKey"], private_key, {"RetCode": 0}, sent) as client:
        client.call(body["Action"], **fields)
    (request,) = sent
    assert request["Signature"] == expected_signature
    assert openpik.signing.string_to_sign(request, private_key) == expected_string


def test_wait_gives_up_after_its_timeout_and_an_error_task_raises_on_download(tmp_path):
    queuing = {"RetCode": 0, "TaskUID": "t", "TaskStatus": "Queuing", "Progress": 0}
    with recording_client("pk", "sk", queuing, []) as client:
        with pytest.raises(TimeoutError, match="still Queuing"):
            client.wait("t", poll_s=0.01, timeout_s=0.05)
        failed = {"TaskUID": "t", "TaskStatus": "Error", "TaskErrorCode": 1003, "TaskErrorMsg": "too long"}
        with pytest.raises(TaskFailed) as error:
            client.download(failed, tmp_path)
    assert error.value.retcode == 1003 and list(tmp_path.iterdir()) == []


@pytest.mark.stack
@pytest.mark.models
def test_generate_txt2img_reports_progress_and_downloads_the_images(live_stack, tmp_path):
    progress: list[tuple[str, int]] = []
    with OpenPikClient(live_stack.url, KEY_A.public, KEY_A.private) as client:
        paths = client.generate(
            tmp_path,
            on_progress=lambda status, percent: progress.append((status, percent)),
            poll_s=0.1,
            MainModelId=1,
            PositivePrompts=["an apple"],
            Steps=4,
            Width=64,
            Height=64,
            BatchSize=2,
        )
    assert len(paths) == 2 and all(path.parent == tmp_path for path in paths)
    assert all(Image.open(path).size == (64, 64) for path in paths)
    assert progress[-1] == ("Finished", 100) and len(progress) >= 2


@pytest.mark.stack
@pytest.mark.models
def test_a_reference_image_makes_it_img2img(live_stack, reference_image):
    with OpenPikClient(live_stack.url, KEY_A.public, KEY_A.private) as client:
        reference = image_to_base64(reference_image)
        task = client.submit(MainModelId=1, Steps=2, Width=64, Height=48, ReferenceImage=reference)
        assert client.wait(task, poll_s=0.1)["TaskStatus"] == "Finished"
        (listed,) = client.call("ListTasksDetails", TaskUIDList=[task])["TaskDetailList"]
    assert listed["Action"] == "GenerateImg2Img"


@pytest.mark.stack
@pytest.mark.models
def test_a_bad_request_raises_picpik_error_naming_the_field(live_stack):
    with OpenPikClient(live_stack.url, KEY_A.public, KEY_A.private) as client, pytest.raises(PicpikError) as error:
        client.submit(MainModelId=1, Steps=0, Width=64, Height=64)
    assert error.value.retcode == 230 and "Steps" in error.value.message


def test_image_to_base64_sends_a_files_bytes_as_they_are_and_a_pil_image_as_png(tmp_path, reference_image):
    path = tmp_path / "ref.jpg"
    reference_image.save(path)
    assert base64.b64decode(image_to_base64(str(path))) == path.read_bytes()
    decoded = Image.open(io.BytesIO(base64.b64decode(image_to_base64(reference_image))))
    assert decoded.format == "PNG" and decoded.tobytes() == reference_image.tobytes()
