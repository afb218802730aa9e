"""The playground page in headless Chromium against the real stack, and its JS signing vs Python's.

The gateway signs what it parsed from the JSON text the browser sent, so parity means:
sign_js(body) == sign_py(json.loads(JSON.stringify(body))), checked on the spec's vectors,
on hand-picked edge cases and on random bodies.
"""

from __future__ import annotations

import json
import math
import random
import re
import struct
from pathlib import Path

import httpx
import pytest
import redis

from openpik.samplers import SAMPLERS
from openpik.signing import sign, string_to_sign
from openpik.task_records import image_key
from tests.stack import KEY_A, REPO
from tests.test_signature import VECTORS

pytestmark = [pytest.mark.stack, pytest.mark.models]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
PAGE_FILES = [REPO / "api" / "playground" / name for name in ("index.html", "app.js", "app.css")]

# Each body is signed by the page, then its JSON.stringify text is signed by Python.
SIGN_IN_PAGE = """
const [bodies, privateKey] = arguments;
return Promise.all(bodies.map(async (body) => [JSON.stringify(body), await window.openpik.sign(body, privateKey)]));
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            "Chromium is not installed: `apt-get install -y chromium chromium-driver` as root "
            "(make test runs scripts/ensure-chromium.sh, which does it)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, live_stack):
    browser.get(f"{live_stack.url}/playground")
    return browser


def test_the_page_and_its_files_are_served_self_only_with_nosniff(live_stack):
    page = httpx.get(f"{live_stack.url}/playground", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("default-src 'self';")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert re.findall(r"<option>([^<]+)</option>", page.text.split('id="sampler"')[1].split("</select>")[0]) == list(
        SAMPLERS
    )
    script = httpx.get(f"{live_stack.url}/playground/app.js", timeout=10)
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(f"{live_stack.url}/playground/..%2Fapi_router.py", timeout=10).status_code == 404


def test_the_page_loads_nothing_from_elsewhere():
    for path in PAGE_FILES:
        assert "://" not in path.read_text(), path


@pytest.mark.parametrize(("body", "private_key", "expected_string", "expected_signature"), VECTORS)
def test_the_page_signs_the_spec_vectors(page, body, private_key, expected_string, expected_signature):
    assert page.execute_script("return window.openpik.stringToSign(...arguments)", body, private_key) == expected_string
    assert page.execute_script(SIGN_IN_PAGE, [body], private_key)[0][1] == expected_signature


EDGE_CASES = [
    {"Small": 1e-7, "Tiny": 5e-324, "Half": -1.5e-7, "Third": 1 / 3, "Sum": 0.1 + 0.2, "Neg": -0.0},
    {"Big": 1e21, "Huge": 1.7976931348623157e308, "TwoTo60": 2.0**60, "IntTwoTo60": 2**60, "Seed": 2**32 - 1},
    {"Under1e21": 123456789012345678901.0, "Money": 123456.789, "Exp": 1e-6, "Below": 9.99e-7},
    {"b": 1, "a": True, "B": False, "_": None, "": "empty key", "é": "", "\uff5e": 1, "\U0001f600": 2},
    {"Nested": {"z": [1, 2.5, {"y": None, "x": [True, "s"]}], "A": {}}, "List": [[], [[]], ""]},
    {"Prompt": 'an apple, 苹果 🍎 "quoted" \\ back\nline', "request_uuid": "u"},
]


@pytest.mark.parametrize("body", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_the_page_signs_edge_cases_as_the_gateway_checks_them(page, body):
    assert_python_agrees(page, [body])


def test_the_page_signs_random_bodies_as_the_gateway_checks_them(page):
    rng = random.Random(20240607)
    assert_python_agrees(page, [random_object(rng, depth=3) for _ in range(200)])


def assert_python_agrees(page, bodies: list[dict]) -> None:
    for text, signature in page.execute_script(SIGN_IN_PAGE, bodies, "private"):
        assert signature == sign(json.loads(text), "private"), string_to_sign(json.loads(text), "private")


def random_object(rng: random.Random, depth: int) -> dict:
    return {random_text(rng): random_value(rng, depth - 1) for _ in range(rng.randint(0, 5))}


def random_value(rng: random.Random, depth: int):
    kind = rng.choice(["float", "small", "int", "big", "text", "bool", "null", "list", "object"])
    if kind in ("list", "object") and depth <= 0:
        kind = "text"
    return {
        "float": lambda: random_float(rng),
        "small": lambda: rng.uniform(-1, 1) * 10.0 ** rng.randint(-12, 0),
        "int": lambda: rng.randint(-(2**53), 2**53),
        "big": lambda: rng.randint(-(2**80), 2**80),
        "text": lambda: random_text(rng),
        "bool": lambda: rng.random() < 0.5,
        "null": lambda: None,
        "list": lambda: [random_value(rng, depth - 1) for _ in range(rng.randint(0, 3))],
        "object": lambda: random_object(rng, depth),
    }[kind]()


def random_float(rng: random.Random) -> float:
    """Any finite double, from random bits."""
    while True:
        (value,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        if math.isfinite(value):
            return value


def random_text(rng: random.Random) -> str:
    """Letters across the planes that sort differently in UTF-16 and in code points; no surrogates."""
    alphabet = "aAzZ_09 é\u4e00\uff5e\U0001f600\U00010000"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4)))


def test_generate_txt2img_in_the_page_shows_the_image(page, live_stack):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    connect(page)
    Select(page.find_element(By.ID, "model")).select_by_value("1")
    for field, value in {"steps": 4, "width": 64, "height": 64, "seed": 7}.items():
        set_value(page, field, value)
    page.find_element(By.ID, "submit").click()
    image = WebDriverWait(page, 120).until(lambda d: finished_image(d))
    assert "/results/" in image.get_attribute("src")
    assert page.execute_script("return arguments[0].naturalWidth", image) == 64
    assert page.find_element(By.ID, "status").text.endswith("Finished 100%")
    assert page.find_element(By.CSS_SELECTOR, "#results a[download]").get_attribute("href") == image.get_attribute(
        "src"
    )
    assert not [entry for entry in page.get_log("browser") if entry["level"] == "SEVERE"]


def test_img2img_with_a_custom_controlnet_unit_from_the_page(page, live_stack, reference_image, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    reference = tmp_path / "reference.png"
    reference_image.save(reference)
    connect(page)
    Select(page.find_element(By.ID, "model")).select_by_value("1")
    for field, value in {"steps": 2, "width": 64, "height": 48}.items():
        set_value(page, field, value)
    page.find_element(By.ID, "reference").send_keys(str(reference))
    Select(page.find_element(By.ID, "control")).select_by_value("custom")
    Select(page.find_element(By.ID, "preprocessor")).select_by_visible_text("canny")
    page.find_element(By.ID, "submit").click()
    image = WebDriverWait(page, 120).until(lambda d: finished_image(d))
    assert page.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image) == [64, 48]
    task = image.get_attribute("src").split("/results/")[1].split("/")[0]
    (detail,) = live_stack.call({"Action": "ListTasksDetails", "TaskUIDList": [task]})["TaskDetailList"]
    assert detail["Action"] == "GenerateImg2Img"
    stored = redis.Redis.from_url(live_stack.env["OPENPIK_REDIS_URL"])
    assert stored.exists(image_key(task, "init"), image_key(task, "control1")) == 2  # the unit's image was sent


# Every value the page gives its <progress> bar, in order, into window.progressSeen.
RECORD_PROGRESS = """
const bar = document.getElementById("progress");
window.progressSeen = [];
new MutationObserver((records) => {
  for (const record of records) window.progressSeen.push(Number(record.oldValue));
  window.progressNow = Number(bar.getAttribute("value"));
}).observe(bar, { attributes: true, attributeFilter: ["value"], attributeOldValue: true });
"""
STATUS_QUERIES = ("GetGenerateTaskDetail", "ListGenerateTaskDetail", "ListTasksDetails")


def test_the_page_shows_progress_from_the_event_stream_without_polling(page, live_stack):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    connect(page)
    Select(page.find_element(By.ID, "model")).select_by_value("1")
    for field, value in {"steps": 30, "width": 64, "height": 64, "seed": 3}.items():
        set_value(page, field, value)
    page.execute_script(RECORD_PROGRESS)
    queries = status_queries_answered(live_stack)
    page.find_element(By.ID, "submit").click()
    WebDriverWait(page, 180).until(lambda d: finished_image(d))

    seen = page.execute_script("return [...window.progressSeen, window.progressNow]")
    assert seen == sorted(seen) and seen[-1] == 100 and any(0 < v < 100 for v in seen), seen
    assert page.find_element(By.ID, "status").text.endswith("Finished 100%")
    assert status_queries_answered(live_stack) == queries  # no polling: the progress came from the stream
    streams = page.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name).filter((n) => n.includes('/events?'))"
    )
    assert len(streams) == 1 and "Action=TaskEvents" in streams[0] and "Timestamp=" in streams[0]
    assert not [entry for entry in page.get_log("browser") if entry["level"] == "SEVERE"]


def status_queries_answered(gateway) -> float:
    """How many task queries (any RetCode) the gateway has answered, from its own metrics."""
    lines = httpx.get(f"{gateway.url}/metrics", timeout=10).text.splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("openpik_requests_total{") and any(f'action="{a}"' in line for a in STATUS_QUERIES)
    )


def test_a_wrong_private_key_shows_the_retcode(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    connect(page, private_key="not-the-key")
    message = WebDriverWait(page, 10).until(lambda d: d.find_element(By.ID, "error").text)
    assert message.startswith("RetCode 171")


def connect(page, private_key: str = KEY_A.private) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page.find_element(By.ID, "public-key").send_keys(KEY_A.public)
    page.find_element(By.ID, "private-key").send_keys(private_key)
    page.find_element(By.ID, "connect").click()
    if private_key == KEY_A.private:
        WebDriverWait(page, 10).until(lambda d: d.find_element(By.ID, "generate-form").is_displayed())


def set_value(page, field: str, value) -> None:
    from selenium.webdriver.common.by import By

    element = page.find_element(By.ID, field)
    element.clear()
    element.send_keys(str(value))


def finished_image(page):
    """The first result <img> once it has loaded, else None (an Error task fails the wait at once)."""
    from selenium.webdriver.common.by import By

    error = page.find_element(By.ID, "error").text
    assert not error, error
    images = page.find_elements(By.CSS_SELECTOR, "#results img")
    if images and page.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", images[0]):
        return images[0]
    return None
