"""`openpik-models`: the operator's command line for the catalog."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models_registry.catalog import Catalog, CatalogError, load_catalog
from openpik.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openpik-models", description=__doc__)
    parser.add_argument("--catalog", type=Path, help="catalog YAML (default: OPENPIK_CATALOG)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="what the catalog serves, with ids")
    commands.add_parser("check", help="every file the catalog points to exists")
    tiny = commands.add_parser("make-tiny", help="write tiny random-weight models and their catalog")
    tiny.add_argument("dir", type=Path)
    args = parser.parse_args(argv)

    if args.command == "make-tiny":
        from models_registry.tiny import build_tiny_models

        print(build_tiny_models(args.dir))
        return 0
    try:
        catalog = load_catalog(args.catalog or get_settings().catalog)
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return {"list": _list, "check": _check}[args.command](catalog)


def _list(catalog: Catalog) -> int:
    for kind in ("main_models", "vaes", "loras", "controlnets", "preprocessors"):
        for entry in getattr(catalog, kind):
            print(f"{kind:14} {entry.id:4}  {entry.model_code:28} {getattr(entry, 'name', '')}")
    for preset in catalog.presets:
        print(f"{'presets':14} {preset.id:4}  controlnet {preset.controlnet}, preprocessor {preset.preprocessor}  {preset.name}")
    return 0


def _check(catalog: Catalog) -> int:
    missing = [(label, path) for label, path in catalog.referenced_files() if not path.exists()]
    for label, path in missing:
        print(f"missing: {label}: {path}")
    print(f"{len(catalog.referenced_files()) - len(missing)} files present, {len(missing)} missing")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
