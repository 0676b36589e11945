"""``file://`` image URLs: slides read in place from shared storage, under allowed roots.

A client names a file; the service reads it only when its real path (every
symlink and ``..`` resolved, after percent-decoding) lies under one of the
directories the operator listed in ``file_roots``. The roots are resolved at
each check too, so a root may itself be a symlink (``/mnt/slides`` →
``/nfs/vol1``) or be mounted after start-up. Formats made of several files
(MIRAX: ``x.mrxs`` and the directory ``x/``; DICOM and Hamamatsu VMS: the
files beside it) must have those files under a root as well, symlinks included.

Refusals are :class:`FileUrlRefused` (a ``ValueError``, so a 422 at submission)
whose message names the cause without showing where a symlink leads.
"""

from __future__ import annotations

import os
import stat
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from primaa.imaging.slides.openslide_backend import detect_vendor

__all__ = ["ALLOW_FILES_HINT", "FileRoots", "FileUrlRefused", "is_file_url"]

#: How an operator allows ``file://`` URLs, named in the refusal when none are.
ALLOW_FILES_HINT: Final = (
    "; to allow them, set PRIMAA_FILE_ROOTS (setting file_roots) to the directories slides "
    "may be read from, comma-separated, e.g. PRIMAA_FILE_ROOTS=/mnt/slides"
)
_LOCAL_HOSTS: Final = frozenset({"", "localhost"})
#: OpenSlide formats that read files besides the one named.
_SIBLING_FORMATS: Final = frozenset({"dicom", "hamamatsu"})
#: OpenSlide reads at most 1 MiB of a MIRAX Slidedat.ini.
_MAX_KEY_FILE: Final = 1 << 20


class FileUrlRefused(ValueError):
    """A ``file://`` URL the service will not read; the message is safe to show."""


def is_file_url(url: str) -> bool:
    """Whether ``url`` uses the ``file`` scheme (any case), the one way to name shared storage."""
    return url[:5].lower() == "file:"


def _url_path(url: str) -> str:
    """The absolute, percent-decoded path of a ``file://`` URL on this machine."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise FileUrlRefused(f"invalid file URL: {exc}") from None
    if parts.netloc.lower() not in _LOCAL_HOSTS:
        raise FileUrlRefused(
            f"file URL names the host {parts.netloc!r}: only files on this server's own "
            "file system can be read (file:///path, or file://localhost/path)"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise FileUrlRefused("file URL must not have a query or a fragment ('?' or '#')")
    try:
        path = urllib.parse.unquote(parts.path, errors="strict")
    except UnicodeDecodeError:
        raise FileUrlRefused("file URL path is not UTF-8 once percent-decoded") from None
    if "\x00" in path:
        raise FileUrlRefused("file URL path contains a NUL character")
    if not path.startswith("/"):
        raise FileUrlRefused("file URL must name an absolute path (file:///path)")
    return path


class FileRoots:
    """The directories ``file://`` URLs may name, and the check of one URL against them."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = tuple(roots)

    def _root_of(self, real: str) -> Path | None:
        path = Path(real)
        for root in self.roots:
            if path.is_relative_to(os.path.realpath(root)):
                return root
        return None

    def _require_inside(self, real: str, what: str) -> None:
        if self._root_of(real) is None:
            raise FileUrlRefused(
                f"{what} is outside the directories this server reads files from (file_roots)"
            )

    def resolve(self, url: str) -> Path:
        """The real path of the file ``url`` names; raise :class:`FileUrlRefused` when it
        may not or cannot be read. Touches the file system: call it off the event loop."""
        if not self.roots:
            raise FileUrlRefused(f"file:// URLs are not allowed on this server{ALLOW_FILES_HINT}")
        path = _url_path(url)
        shown = urllib.parse.quote(path)
        real = os.path.realpath(path)
        self._require_inside(real, f"file:// URL {shown}")
        try:
            info = os.stat(real)
        except FileNotFoundError:
            raise FileUrlRefused(f"no such file: {shown}") from None
        except OSError as exc:
            raise FileUrlRefused(f"cannot read {shown}: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise FileUrlRefused(f"{shown} is {kind}: name the slide's file")
        if info.st_size == 0:
            raise FileUrlRefused(f"{shown} is empty (0 bytes)")
        if not os.access(real, os.R_OK):
            raise FileUrlRefused(f"{shown} is not readable by the service")
        self._check_companions(Path(real), shown)
        return Path(real)

    def _check_companions(self, real: Path, shown: str) -> None:
        """Files the slide's reader opens besides ``real`` must be under a root too."""
        vendor = detect_vendor(real)
        # OpenSlide detects MIRAX only once x/Slidedat.ini exists: the name says it first.
        if vendor == "mirax" or real.suffix.lower() == ".mrxs":
            data_dir = real.with_suffix("")
            if not data_dir.is_dir():
                raise FileUrlRefused(
                    f"{shown} is a MIRAX slide without its data directory "
                    f"{urllib.parse.quote(data_dir.name)}/ beside it"
                )
            self._require_inside(os.path.realpath(data_dir), f"the data directory of {shown}")
            self._check_entries(data_dir, shown)
            self._check_named_files(data_dir / "Slidedat.ini", data_dir, shown)
        elif vendor in _SIBLING_FORMATS:
            self._check_entries(real.parent, shown)
            if real.suffix.lower() in (".vms", ".vmu"):
                self._check_named_files(real, real.parent, shown)

    def _check_entries(self, directory: Path, shown: str) -> None:
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            raise FileUrlRefused(f"cannot list the files of {shown}: {exc.strerror}") from None
        for entry in entries:
            if entry.is_symlink():
                self._require_inside(
                    os.path.realpath(entry.path),
                    f"{urllib.parse.quote(entry.name)} (a file of {shown})",
                )

    def _check_named_files(self, key_file: Path, base: Path, shown: str) -> None:
        """Every file a MIRAX ``Slidedat.ini`` or a Hamamatsu VMS names (``INDEXFILE``,
        ``FILE_0``, ``ImageFile``...) is opened relative to ``base``: a name with ``..``
        or through a linked subdirectory must still land under a root."""
        try:
            with key_file.open("rb") as f:
                text = f.read(_MAX_KEY_FILE).decode("utf-8", "replace")
        except OSError:
            return  # no index file: OpenSlide cannot open the slide, and reads nothing
        for line in text.splitlines():
            key, equals, value = line.partition("=")
            name = value.strip()
            if not equals or not name or key.lstrip().startswith(("#", "[")):
                continue
            candidate = os.path.join(base, name.lstrip("/\\"))
            if os.path.lexists(candidate):
                self._require_inside(
                    os.path.realpath(candidate),
                    f"{urllib.parse.quote(name)} (named by {key_file.name} of {shown})",
                )
