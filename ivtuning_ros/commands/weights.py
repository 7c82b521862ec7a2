"""`ivtuning weights`: public pretrained weights by name: list, get, path, import.

``get`` downloads through the publishers' own channels (torchvision's URLs and torch.hub,
timm's hub ids and huggingface_hub), verifies, converts with the project's converters and
caches (`ivtuning_ros.hub`). ``import`` does the same from a file fetched elsewhere, for a
robot without internet. The node and every command then take the name where they take a
checkpoint or ``backbone.weights``; they never download.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
from pathlib import Path

from ..hub.cache import cache_dir, cached_file, get_command, is_cached, read_manifest
from ..hub.catalog import CATALOG, CONVERTERS, WeightsEntry, find
from ..hub.convert import convert_into_cache
from ..hub.download import fetch, source_url, verify
from ..model.weights import WeightsError
from ..ros.params import package_dir


def _entry(name: str) -> WeightsEntry:
    try:
        return find(name)
    except KeyError as exc:
        raise WeightsError(exc.args[0]) from None


def cmd_list(args: argparse.Namespace) -> int:
    rows = [{"name": e.name, "what": e.what, "source": e.source, "location": e.location,
             "size_mb": e.size_mb, "licence": e.licence, "configs": list(e.configs),
             "becomes": CONVERTERS[e.converter], "verification": e.verification,
             "cached": is_cached(e)} for e in CATALOG.values()]
    if args.json:
        print(json.dumps({"cache": str(cache_dir()), "weights": rows}, indent=2))
        return 0
    print(f"cache: {cache_dir()}")
    print(f"{'name':<22}{'cached':<8}{'MB':>7}  {'source':<12}{'licence':<27}configs")
    for row in rows:
        print(f"{row['name']:<22}{'yes' if row['cached'] else 'no':<8}{row['size_mb']:>7.0f}  "
              f"{row['source']:<12}{row['licence']:<27}{', '.join(row['configs'])}")
        print(f"{'':<22}{row['what']}; becomes a {row['becomes']}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    for name in args.names:
        entry = _entry(name)
        if is_cached(entry) and not args.force:
            print(f"{name}: already cached: {cached_file(entry)}")
            continue
        workdir = cache_dir() / ".downloads" / entry.cache_file
        shutil.rmtree(workdir, ignore_errors=True)
        try:
            source, digest = fetch(entry, workdir, progress=not args.quiet)
            where = entry.location if entry.source == "timm" else source_url(entry)
            record = {"downloaded_from": where, "sha256": digest,
                      "verified_against": entry.verification}
            path, done = convert_into_cache(entry, source, package_dir("models"), record)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            with contextlib.suppress(OSError):  # the last download's: nothing else in it
                workdir.parent.rmdir()
        print(f"{name}: verified ({entry.verification}; sha256 {digest}), converted ({done}): "
              f"{path}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    entry = _entry(args.name)
    source = Path(args.file)
    if not source.is_file():
        raise WeightsError(f"'{source}' does not exist: pass the publisher's file "
                           f"{entry.file_name} (from {entry.location})")
    if is_cached(entry) and not args.force:
        raise WeightsError(f"{entry.name} is already cached ({cached_file(entry)}); pass "
                           "--force to replace it")
    unchecked = not (entry.sha256 or entry.hash_prefix)
    record = {"downloaded_from": f"imported from {source.resolve()}",
              "sha256": verify(entry, source),
              "verified_against": "nothing: no publisher hash is known offline"
              if unchecked else entry.verification}
    path, done = convert_into_cache(entry, source, package_dir("models"), record)
    print(f"{entry.name}: imported, converted ({done}): {path}")
    if unchecked:
        print(f"{entry.name}: note: no publisher hash is known offline for this file; its "
              f"sha256 is {record['sha256']}: compare it with the one the publisher shows "
              f"({entry.location})")
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    entry = _entry(args.name)
    if not is_cached(entry):
        raise WeightsError(f"weights '{entry.name}' are not in the cache {cache_dir()}: run "
                           f"`{get_command(entry.name)}`")
    if args.json:
        print(json.dumps({"path": str(cached_file(entry)), **read_manifest(entry)}, indent=2))
    else:
        print(cached_file(entry))
    return 0


def add_weights_parser(commands: argparse._SubParsersAction) -> None:
    weights = commands.add_parser(
        "weights", help="public pretrained weights by name: list, get (download, verify, "
                        "convert, cache), path, import")
    actions = weights.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the catalogue, and what is cached")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.set_defaults(run=cmd_list)
    get = actions.add_parser("get", help="download, verify, convert and cache weights")
    get.add_argument("names", nargs="+", metavar="NAME", help="catalogue names")
    get.add_argument("--force", action="store_true", help="fetch again even if cached")
    get.add_argument("--quiet", action="store_true", help="no progress bars")
    get.set_defaults(run=cmd_get)
    path = actions.add_parser("path", help="the cached file of a name")
    path.add_argument("name")
    path.add_argument("--json", action="store_true", help="the manifest too (sha256, source)")
    path.set_defaults(run=cmd_path)
    imported = actions.add_parser(
        "import", help="verify, convert and cache the publisher's file fetched elsewhere "
                       "(a robot without internet)")
    imported.add_argument("name")
    imported.add_argument("file", help="the publisher's file, as downloaded")
    imported.add_argument("--force", action="store_true", help="replace a cached entry")
    imported.set_defaults(run=cmd_import)
