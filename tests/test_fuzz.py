"""Schema-driven fuzzing of POST /: bodies schemathesis derives from our own /openapi.json.

Every generated body that is a JSON object is signed with KEY_A after generation, so the
cases reach validation and the actions instead of all stopping at the signature check.
Each answer must be a PICPIK envelope (never a 5xx), and the queue must move only for an
accepted generate request. No worker runs: accepted tasks stay queued, where they can be
counted.

The number of generated cases is OPENPIK_FUZZ_CASES (default 500: 15 to 30 s on two shared
cores, plus the tiny models' build when the session has not made them yet); the runs are
derandomized, so CI sees the same cases every time. A longer run, as for `make bench`
(5000 cases: about 3 minutes):

    OPENPIK_FUZZ_CASES=5000 .venv/bin/python -m pytest -q tests/test_fuzz.py -s
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from api.actions import ACTIONS
from openpik.keys import Bucket
from openpik.routing import DEFAULT_QUEUE
from openpik.task_records import TASK_ID_LENGTH, record_key
from tests.requests import PNG, custom_unit, img2img, txt2img
from tests.stack import KEY_A, RedisDb, redis_fixture, running_stack, signed, stack_settings

pytestmark = [pytest.mark.stack, pytest.mark.models]

TASK_RECORDS = record_key("?" * TASK_ID_LENGTH)  # task ids are 20 characters; image keys are longer
GENERATE_ACTIONS = {name for name, action in ACTIONS.items() if action.bucket == Bucket.GENERATE}
"""Every action that queues a task."""
CASES = int(os.environ.get("OPENPIK_FUZZ_CASES", "500"))

# Requests the generators would almost never make: valid ones (a decodable image, catalog
# ids and codes), so the accepted paths are fuzzed too, a replayed request_uuid, and an
# Action that is not in the document.
SEEDED_BODIES = [
    txt2img(),
    img2img(),
    img2img(ReferenceImage=""),
    txt2img(ControlNetParams=[custom_unit()]),
    txt2img(ControlNetParams=[{"ControlNetImg": PNG, "ControlPreSetId": 1}], SubModelIds=[1]),
    txt2img(request_uuid="fuzz-replay"),
    txt2img(request_uuid="fuzz-replay"),
    {
        "Action": "GenerateImages",
        "MainModel": {"ModelCode": "tiny-sd15-a"},
        "Width": 64,
        "Height": 64,
        "ImageAndMaskList": [PNG],
        "Image2Image": {"ImageIndex": 0},
        "ControlNetList": [
            {
                "ControlModel": {"ModelCode": "control_v11p_sd15_canny"},
                "ImageIndex": 0,
                "PreProcessor": {"ModelCode": "canny", "InferenceParams": {"CannyLowThreshold": 50}},
            }
        ],
    },
    {"Action": "RemoveBackground", "RawImage": PNG, "Box": [0, 0, 32, 32], "HairOptimization": "off"},
    {"Action": "RemoveContents", "RawImage": PNG, "Mask": PNG, "InvertMask": True, "MaskBlur": 4},
    {
        "Action": "GenerateBackgrounds",
        "MainModel": {"ModelCode": "tiny-sd15-a"},
        "ImageList": [PNG],
        "TransparentForeground": {"ImageIndex": 0},
    },
    {"Action": "RemoveWatermark"},
]


# Empty before the run and after it: the queued tasks are only there to be counted.
redis_client = redis_fixture(RedisDb.FUZZ, empty_after=True)


@pytest.fixture(scope="module")
def gateway(tiny_catalog_path, tmp_path_factory, redis_client):
    tmp = tmp_path_factory.mktemp("fuzz")
    with running_stack(stack_settings(tiny_catalog_path, tmp, RedisDb.FUZZ), tmp) as stack:
        yield stack.gateway


def request_bodies(url: str) -> st.SearchStrategy:
    """Bodies for POST / as the served document describes them: schema-valid ones and not.

    Only the body is kept: POST / has no parameters, and the body is signed after generation.
    """
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=schemathesis.Config())
    operation = schema["/"]["POST"]
    generated = st.one_of(
        *(
            operation.as_strategy(generation_mode=mode).map(lambda case: case.body)
            for mode in schemathesis.GenerationMode
        )
    )
    return st.one_of(generated, generated.map(in_catalog))


def in_catalog(body):
    """The body with a real model and sampler wherever it names one (half of the cases).

    A generator cannot guess catalog ids or codes, and a wrong model is refused before the
    sampler, LoRA, ControlNet and image rules are looked at; this gets the cases there.
    """
    if not isinstance(body, dict):
        return body
    real = {"MainModelId": 1, "ModelType": "combined_model", "Sampler": "Euler a"}
    body = body | {name: value for name, value in real.items() if name in body}
    if isinstance(body.get("MainModel"), dict):
        body["MainModel"] = body["MainModel"] | {"ModelCode": "tiny-sd15-a"}
    return body


def wire_bytes(body) -> bytes:
    """An object signed by KEY_A (whatever PublicKey was generated); anything else as generated."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, dict):
        body = signed(current_timestamp(body) | {"PublicKey": KEY_A.public})
    return json.dumps(body).encode()


def current_timestamp(body: dict) -> dict:
    """An integer Timestamp made current: a generated one is almost never within the window.

    Otherwise every such case stops at 174 before validation; Timestamps of other types
    are left as generated and still exercise that refusal.
    """
    stamp = body.get("Timestamp")
    if isinstance(stamp, int) and not isinstance(stamp, bool):
        return body | {"Timestamp": int(time.time())}
    return body


def queue_state(redis_client) -> tuple[int, int]:
    """(messages in the Celery queue, task records): what only an accepted generate request moves."""
    return redis_client.llen(DEFAULT_QUEUE), sum(1 for _ in redis_client.scan_iter(TASK_RECORDS, count=1000))


@dataclass
class Tally:
    """What the run covered, and the TaskUIDs it was given."""

    retcodes: Counter = field(default_factory=Counter)
    actions: Counter = field(default_factory=Counter)
    task_uids: set[str] = field(default_factory=set)

    @property
    def cases(self) -> int:
        return sum(self.retcodes.values())

    def report(self) -> str:
        retcodes = ", ".join(f"{code}: {n}" for code, n in sorted(self.retcodes.items()))
        actions = ", ".join(f"{name}: {n}" for name, n in self.actions.most_common())
        return (
            f"\nfuzz: {self.cases} cases, {len(self.task_uids)} tasks queued\n  RetCode {retcodes}\n  Action {actions}"
        )


def action_of(body) -> str:
    """The Action as the table knows it, or what kind of nonsense was sent instead."""
    action = body.get("Action") if isinstance(body, dict) else None
    return action if action in ACTIONS else "(other)"


def exercise(client: httpx.Client, redis_client, body, tally: Tally) -> None:
    """Send one case and check the answer against what happened to the queue."""
    before = queue_state(redis_client)
    response = client.post("/", content=wire_bytes(body), headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text
    retcode = response.json()["RetCode"]
    assert type(retcode) is int, response.text
    action = action_of(body)
    tally.retcodes[retcode] += 1
    tally.actions[action] += 1
    new_task = False
    if retcode == 0 and action in GENERATE_ACTIONS:
        task_uid = response.json()["TaskUID"]
        assert redis_client.exists(record_key(task_uid)), response.text
        new_task = task_uid not in tally.task_uids  # a replayed request_uuid answers the earlier task
        tally.task_uids.add(task_uid)
    expected = (before[0] + 1, before[1] + 1) if new_task else before
    assert queue_state(redis_client) == expected, f"RetCode {retcode} moved the queue: {response.text}"


def with_examples(test, bodies: list[dict]):
    """Hypothesis runs explicit examples first, before and besides the generated cases."""
    for body in bodies:
        test = example(body)(test)
    return test


def test_fuzz_post_bodies_from_the_openapi_document(gateway, redis_client):
    """Every case answered with an envelope; only accepted generate requests queued anything."""
    tally = Tally()
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        # No shrinking: it would replay cases against a queue that has moved since; the
        # failing body is reported as sent, and derandomize makes it come back every run.
        @settings(
            max_examples=CASES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(request_bodies(gateway.url))
        def fuzz(body):
            exercise(client, redis_client, body, tally)

        with_examples(fuzz, SEEDED_BODIES)()
    print(tally.report())
    assert queue_state(redis_client) == (len(tally.task_uids), len(tally.task_uids))
    assert len(tally.actions.keys() - {"(other)"}) >= 6, tally.report()
    assert len(tally.retcodes) >= 3, tally.report()
