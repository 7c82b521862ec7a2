"""Fetching a catalogue entry's publisher file, verified, into a work folder.

URL sources (torchvision's and the publishers' URLs) go through torch.hub's
``download_url_to_file`` (progress bar, a ``.partial`` file renamed only when complete);
timm's hub files through huggingface_hub's ``hf_hub_download`` (its own progress bar and
size check). Every file is then checked here: its length against the server's, its
sha256 against the catalogue's hash, the publisher's prefix or the hub's LFS hash. Any
failure is a `DownloadError` of one line naming the cause and the fix, and the work folder
(the caller's) is removed, so no partial file is ever taken for a valid one.

``IVTUNING_MIRROR`` (e.g. ``http://mirror.local/weights``) fetches every URL from
``<mirror>/<host>/<path>`` instead: an organisation's mirror that keeps the publishers'
paths. ``HF_ENDPOINT`` is huggingface_hub's own setting for a hub mirror.
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import torch

from ..model.weights import WeightsError
from .catalog import WeightsEntry

MIRROR_ENV = "IVTUNING_MIRROR"
_CHUNK = 1 << 20
# How huggingface_hub (its size check) and its HTTP client report a short body.
_TRUNCATED = ("Consistency check failed", "without sending complete message body")


class DownloadError(WeightsError):
    """A download that failed or did not verify; nothing of it was kept."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def source_url(entry: WeightsEntry) -> str:
    """The URL an entry is fetched from: the publisher's, or its path under the mirror."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return entry.location
    parts = urlsplit(entry.location)
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}"


def fetch(entry: WeightsEntry, workdir: Path, progress: bool = True) -> tuple[Path, str]:
    """Download ``entry``'s file into ``workdir`` and verify it; returns (its path, its
    sha256)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if entry.source == "timm":
        path, published = _fetch_hub(entry, workdir, progress)
    else:
        path, published = _fetch_url(entry, workdir, progress), None
    return path, verify(entry, path, published)


def verify(entry: WeightsEntry, path: Path, published: str | None = None) -> str:
    """Check ``path`` against the entry's sha256 or hash prefix (or ``published``, the hub's
    sha256); returns the file's sha256. `DownloadError` when it differs."""
    digest = sha256_of(path)
    expected = entry.sha256 or published or entry.hash_prefix
    if expected and not digest.startswith(expected):
        kind = "sha256" if len(expected) == 64 else "sha256 prefix"
        raise DownloadError(
            f"{entry.name}: '{path.name}' has sha256 {digest[:16]}…, the publisher's {kind} is "
            f"{expected[:16]}: the file was altered or is not the publisher's (a wrong mirror?) "
            f"and nothing of it was cached: run `ivtuning weights get {entry.name}` again from "
            "the publisher's server")
    return digest


def _fetch_url(entry: WeightsEntry, workdir: Path, progress: bool) -> Path:
    url = source_url(entry)
    destination = workdir / entry.file_name
    expected_size = _content_length(entry, url)
    try:
        torch.hub.download_url_to_file(url, str(destination), progress=progress)
    except urllib.error.HTTPError as exc:
        raise _refused(entry, url, exc) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise _unreachable(entry, url, exc) from None
    size = destination.stat().st_size
    if expected_size is not None and size != expected_size:
        destination.unlink()
        raise DownloadError(f"{entry.name}: the download of {url} stopped after {size} of "
                            f"{expected_size} bytes (truncated; nothing was kept): run "
                            f"`ivtuning weights get {entry.name}` again")
    return destination


def _content_length(entry: WeightsEntry, url: str) -> int | None:
    """The server's size of the file (a HEAD request); None where it gives none."""
    request = urllib.request.Request(url, method="HEAD",
                                     headers={"User-Agent": "ivtuning-weights"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            length = response.headers.get("Content-Length")
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 405, 501):  # a server that refuses HEAD: the hash still guards
            return None
        raise _refused(entry, url, exc) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise _unreachable(entry, url, exc) from None
    return int(length) if length and length.isdigit() else None


def _probe(entry: WeightsEntry, url: str) -> None:
    """Fail at once where the hub cannot be reached: huggingface_hub would retry for
    about 25 s first. Any HTTP answer means it can; huggingface_hub then reports it."""
    request = urllib.request.Request(url, method="HEAD",
                                     headers={"User-Agent": "ivtuning-weights"})
    try:
        urllib.request.urlopen(request, timeout=30).close()
    except urllib.error.HTTPError:
        pass
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise _unreachable(entry, url, exc) from None


def _refused(entry: WeightsEntry, url: str, exc: urllib.error.HTTPError) -> DownloadError:
    return DownloadError(f"{entry.name}: {url} answered HTTP {exc.code} ({exc.reason}): the "
                         "file moved or the mirror lacks it; fetch it by hand and `ivtuning "
                         f"weights import {entry.name} FILE`")


def _unreachable(entry: WeightsEntry, where: str, exc: BaseException) -> DownloadError:
    reason = getattr(exc, "reason", exc)
    return DownloadError(
        f"{entry.name}: cannot reach {urlsplit(where).netloc or where} ({reason}): no network "
        f"here? run `ivtuning weights get {entry.name}` on a machine with internet and copy its "
        f"cache folder, or `ivtuning weights import {entry.name} FILE` with the publisher's file")


def _fetch_hub(entry: WeightsEntry, workdir: Path, progress: bool) -> tuple[Path, str | None]:
    """huggingface_hub into ``workdir``; returns (file, the hub's sha256 of it or None).

    The hub stores an LFS file under its sha256 (the blob's name), which is what the
    hub published for it: that is the hash checked."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    from huggingface_hub.utils import logging as hf_logging

    endpoint = os.environ.get("HF_ENDPOINT") or None
    where = f"{endpoint or 'https://huggingface.co'}/{entry.location}"
    _probe(entry, f"{where}/resolve/main/{entry.file_name}")
    (enable_progress_bars if progress else disable_progress_bars)()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its retry warnings: the failure is told in one line
    try:
        path = Path(hf_hub_download(entry.location, entry.file_name,
                                    cache_dir=workdir / "huggingface", endpoint=endpoint))
    except LocalEntryNotFoundError as exc:
        raise _unreachable(entry, where, exc.__cause__ or exc) from None
    except GatedRepoError:
        raise DownloadError(f"{entry.name}: {where} is gated: accept its licence "
                            f"({entry.licence}) on that page, then log in with `hf auth login` "
                            "(or set HF_TOKEN) and run the command again") from None
    except Exception as exc:  # huggingface_hub's and its HTTP client's errors
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if any(sign in message for sign in _TRUNCATED):
            raise DownloadError(f"{entry.name}: the download of {entry.file_name} from {where} "
                                "is truncated (shorter than the hub's size; nothing was "
                                f"kept): run `ivtuning weights get {entry.name}` again") from None
        raise DownloadError(f"{entry.name}: {where}: {message}: fetch it by hand and "
                            f"`ivtuning weights import {entry.name} FILE`") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    blob = path.resolve().name
    return path, blob if len(blob) == 64 and all(c in "0123456789abcdef" for c in blob) else None
