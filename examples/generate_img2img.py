"""Send a signed GenerateImg2Img to an OpenPik (or PICPIK) endpoint, wait, download the images.

    python examples/generate_img2img.py --url http://127.0.0.1:8000 --public-key PK --private-key SK

Uses only the signature rules of the API (api/signature.py) and plain HTTP.
"""
from __future__ import annotations

import argparse
import base64
import io
import time
import uuid
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

from api.signature import sign


def reference_image() -> str:
    """A small drawing to start from (any PNG/JPEG/WEBP works)."""
    image = Image.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((48, 48, 208, 208), fill="red", outline="black", width=6)
    draw.line((128, 48, 140, 10), fill="green", width=8)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def call(url: str, public_key: str, private_key: str, body: dict) -> dict:
    body = {"PublicKey": public_key} | body
    body["Signature"] = sign(body, private_key)
    answer = httpx.post(url, json=body, timeout=60).json()
    if answer["RetCode"] != 0:
        raise SystemExit(f"RetCode {answer['RetCode']}: {answer['Message']}")
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--public-key", required=True)
    parser.add_argument("--private-key", required=True)
    parser.add_argument("--size", type=int, default=64, help="Width and Height (the tiny demo models like 64)")
    parser.add_argument("--out", type=Path, default=Path("var/out"))
    args = parser.parse_args()

    image = reference_image()
    task = call(args.url, args.public_key, args.private_key, {
        "Action": "GenerateImg2Img", "request_uuid": str(uuid.uuid4()), "ModelType": "combined_model",
        "MainModelId": 1, "SubModelIds": [1], "SubModelParams": [{"SubModelId": 1, "ControlWeight": 0.8}],
        "BatchSize": 2, "Steps": 20, "CfgScale": 7.5, "Seed": -1, "Sampler": "Euler a", "ClipSkip": 1,
        "Width": args.size, "Height": args.size, "TranslatePrompt": False, "PositivePrompts": ["an apple"],
        "NegativePrompts": ["blurry"], "ReferenceImage": image, "ReferenceScale": 0.4,
        "EnableControlNet": True, "ControlNetParams": [{"ControlPreSetId": 1, "ControlWeight": 1.0, "ControlNetImg": image}],
    })["TaskUID"]
    print(f"TaskUID {task}")
    while True:
        detail = call(args.url, args.public_key, args.private_key, {"Action": "GetGenerateTaskDetail", "TaskUID": task})
        print(f"  {detail['TaskStatus']:9} {detail.get('Progress', 0):3}%", end="\r", flush=True)
        if detail["TaskStatus"] in ("Finished", "Error"):
            break
        time.sleep(0.5)
    print()
    if detail["TaskStatus"] == "Error":
        raise SystemExit(f"Error {detail['TaskErrorCode']}: {detail['TaskErrorMsg']}")
    args.out.mkdir(parents=True, exist_ok=True)
    for url in detail["FinalPictureUrls"]:
        path = args.out / f"{task}-{url.rsplit('/', 1)[-1]}"
        path.write_bytes(httpx.get(url, timeout=60).content)
        print(f"saved {path}")


if __name__ == "__main__":
    main()
