"""Where converted weights live, and resolving a setting that names a catalogue entry.

The cache is ``$IVTUNING_CACHE``, else ``~/.cache/ivtuning_ros``. Each entry is one
converted file, ``<name with : as -->.pth``, plus ``<same>.json``: its provenance (source,
the downloaded file's sha256, what was verified). A robot without internet takes the whole
folder from a machine that ran `ivtuning weights get`, or imports the publisher's file.
Resolving never downloads: an entry that is not cached is a `NotCached` error whose one
line is the command that fetches it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..model.weights import WeightsError
from .catalog import WeightsEntry, find, is_catalogue_name

CACHE_ENV = "IVTUNING_CACHE"


class NotCached(WeightsError):
    """A catalogue name whose converted file is not in the cache."""


def cache_dir() -> Path:
    """``$IVTUNING_CACHE``, else ``~/.cache/ivtuning_ros`` (read at each call)."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else \
        Path.home() / ".cache" / "ivtuning_ros"


def cached_file(entry: WeightsEntry) -> Path:
    return cache_dir() / entry.cache_file


def manifest_file(entry: WeightsEntry) -> Path:
    return cached_file(entry).with_suffix(".json")


def is_cached(entry: WeightsEntry) -> bool:
    """The converted file and its manifest are there (a file is only renamed into place
    after its download verified and its conversion loaded, so presence means complete)."""
    return cached_file(entry).is_file() and manifest_file(entry).is_file()


def read_manifest(entry: WeightsEntry) -> dict:
    return json.loads(manifest_file(entry).read_text())


def get_command(name: str) -> str:
    return f"ivtuning weights get {name}"


def resolve(value: str) -> str:
    """A setting's weights value: a catalogue name -> its cached file; anything else (a
    path) unchanged. Raises `NotCached` with the command that fetches the entry."""
    if not is_catalogue_name(value):
        return value
    entry = find(value)
    if not is_cached(entry):
        raise NotCached(f"weights '{value}' are not in the cache {cache_dir()}: run "
                        f"`{get_command(value)}` on a machine with internet (or copy its "
                        f"cache folder here, or set {CACHE_ENV})")
    return str(cached_file(entry))
