"""Send a signed GenerateImg2Img to an OpenPik (or PICPIK) endpoint, wait, download the images.

    python examples/generate_img2img.py --url http://127.0.0.1:8000 --public-key PK --private-key SK

Uses openpik.client (signing, polling, downloads); see its docstring for the API.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from openpik.client import OpenPikClient, PicpikError, image_to_base64


def reference_image() -> Image.Image:
    """A small drawing to start from (any PNG/JPEG/WEBP file works: pass its path to image_to_base64)."""
    image = Image.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((48, 48, 208, 208), fill="red", outline="black", width=6)
    draw.line((128, 48, 140, 10), fill="green", width=8)
    return image


def show_progress(status: str, percent: int) -> None:
    print(f"  {status:9} {percent:3}%", end="\r", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--public-key", required=True)
    parser.add_argument("--private-key", required=True)
    parser.add_argument("--size", type=int, default=64, help="Width and Height (the tiny demo models like 64)")
    parser.add_argument("--out", type=Path, default=Path("var/out"))
    args = parser.parse_args()

    image = image_to_base64(reference_image())
    with OpenPikClient(args.url, args.public_key, args.private_key) as client:
        try:
            task = client.submit(
                MainModelId=1,
                SubModelIds=[1],
                SubModelParams=[{"SubModelId": 1, "ControlWeight": 0.8}],
                BatchSize=2,
                Steps=20,
                CfgScale=7.5,
                Width=args.size,
                Height=args.size,
                PositivePrompts=["an apple"],
                NegativePrompts=["blurry"],
                ReferenceImage=image,
                ReferenceScale=0.4,
                EnableControlNet=True,
                ControlNetParams=[{"ControlPreSetId": 1, "ControlWeight": 1.0, "ControlNetImg": image}],
            )
            print(f"TaskUID {task}")
            detail = client.wait(task, on_progress=show_progress)
            print()
            paths = client.download(detail, args.out)
        except PicpikError as error:
            raise SystemExit(str(error)) from None
    for path in paths:
        print(f"saved {path}")


if __name__ == "__main__":
    main()
