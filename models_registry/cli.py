"""`openpik-models`: the operator's command line for the catalog."""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

from models_registry.catalog import Catalog, CatalogError, load_catalog
from models_registry.importer import (
    KINDS,
    ModelImportError,
    add_to_catalog,
    detect_architecture,
    pull,
    safetensors_keys,
)
from openpik.families import FAMILIES
from openpik.settings import get_settings

# Catalog sections whose entries name an architecture, and the importer's kind for each.
SECTIONS_WITH_ARCHITECTURE = {"main_models": "main", "loras": "lora", "controlnets": "controlnet"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openpik-models", description=__doc__)
    parser.add_argument("--catalog", type=Path, help="catalog YAML (default: OPENPIK_CATALOG)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="what the catalog serves, with ids")
    commands.add_parser(
        "check", help="every file the catalog points to exists, opens and is of the architecture the catalog says"
    )
    tiny = commands.add_parser("make-tiny", help="write tiny random-weight models and their catalog")
    tiny.add_argument("dir", type=Path)
    add = commands.add_parser(
        "add",
        help="import a local diffusers folder, single-file checkpoint, LoRA, "
        "ControlNet or VAE into the catalog with a new id",
    )
    add.add_argument("path", type=Path)
    add.add_argument("--kind", choices=["auto", *KINDS], default="auto")
    add.add_argument("--name")
    add.add_argument("--code", help="ModelCode (default: from the file name)")
    add.add_argument("--architecture", choices=list(FAMILIES), help="model family (default: detected from the file)")
    add.add_argument("--group", help="main models: the worker queue group")
    add.add_argument("--owner", help="main models: the PublicKey whose custom_model this is")
    add.add_argument(
        "--config", type=Path, help="single-file main models: their diffusers config folder (default: the family's)"
    )
    pull_cmd = commands.add_parser("pull", help="download a model from the Hugging Face hub (needs internet)")
    pull_cmd.add_argument("repo_id")
    pull_cmd.add_argument("--dir", type=Path, default=Path("models"), help="download under DIR/<repo name>")
    pull_cmd.add_argument("--revision")
    pull_cmd.add_argument("--add", action="store_true", help="then add it to the catalog")
    args = parser.parse_args(argv)

    if args.command == "make-tiny":
        from models_registry.tiny import build_tiny_models

        print(build_tiny_models(args.dir))
        return 0
    if args.command in ("add", "pull"):
        return _import(args, args.catalog or get_settings().catalog)
    try:
        catalog = load_catalog(args.catalog or get_settings().catalog)
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return {"list": _list, "check": _check}[args.command](catalog)


def _import(args: argparse.Namespace, catalog_file: Path) -> int:
    try:
        if args.command == "pull":
            path = pull(args.repo_id, args.dir / args.repo_id.split("/")[-1], args.revision)
            print(f"downloaded to {path}")
            if not args.add:
                return 0
            entry = add_to_catalog(catalog_file, path)
        else:
            entry = add_to_catalog(
                catalog_file,
                args.path,
                args.kind,
                args.name,
                args.code,
                args.architecture,
                group=args.group,
                owner=args.owner,
                config=args.config,
            )
    except ModelImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"added id {entry['id']} ({entry['model_code']}) to {catalog_file}")
    return 0


def _list(catalog: Catalog) -> int:
    for kind in ("main_models", "vaes", "loras", "controlnets", "preprocessors"):
        for entry in getattr(catalog, kind):
            print(f"{kind:14} {entry.id:4}  {entry.model_code:28} {getattr(entry, 'name', '')}")
    for preset in catalog.presets:
        uses = f"controlnet {preset.controlnet}, preprocessor {preset.preprocessor}"
        print(f"{'presets':14} {preset.id:4}  {uses}  {preset.name}")
    default = catalog.background_remover
    for remover in catalog.background_removers:
        mark = " (default)" if remover is default else ""
        print(f"{'removers':14} {remover.id:4}  {'group ' + remover.group:28} {remover.name}{mark}")
    return 0


def _check(catalog: Catalog) -> int:
    """Every file the catalog names exists and opens as what it should be (headers only: fast)."""
    problems = [(label, path, _problem(path)) for label, path in catalog.referenced_files()]
    problems = [p for p in problems if p[2]]
    problems += _architecture_mismatches(catalog, {path for _, path, _ in problems})
    for label, path, problem in problems:
        print(f"{problem}: {label}: {path}")
    print(f"{len(catalog.referenced_files()) - len(problems)} entries ok, {len(problems)} with problems")
    return 1 if problems else 0


def _architecture_mismatches(catalog: Catalog, unreadable: set[Path]) -> list[tuple[str, Path, str]]:
    """Entries whose file is of another model family than their ``architecture`` field says.

    A file whose family cannot be told (an unusual LoRA) is not a mismatch: the field stands.
    """
    mismatches = []
    for section, kind in SECTIONS_WITH_ARCHITECTURE.items():
        for entry in getattr(catalog, section):
            if entry.path in unreadable:
                continue
            try:
                found = detect_architecture(entry.path, kind)
            except ModelImportError:
                continue
            if found != entry.architecture:
                problem = f"architecture mismatch (the file is {found}, field architecture says {entry.architecture})"
                mismatches.append((f"{section} id {entry.id}", entry.path, problem))
    return mismatches


def _problem(path: Path) -> str:
    if not path.exists():
        return "missing"
    try:
        if path.suffix == ".safetensors":
            safetensors_keys(path)
        elif path.is_dir() and not any(
            (path / name).is_file() for name in ("model_index.json", "config.json", "source.spm")
        ):
            return "not a model folder (no model_index.json or config.json)"
    except (OSError, ValueError, struct.error) as exc:
        return f"unreadable ({type(exc).__name__})"
    return ""


if __name__ == "__main__":
    sys.exit(main())
