"""IHE XDM media (ITI TF-1 16, ITI TF-3 4.2.1): a zip whose documents live under IHE_XDM/.

Zips from the outside are opened with limits on member count, declared and actual sizes and
compression ratio, and members are read into memory only up to the limit (never extracted to
disk), so a zip bomb costs at most the limit.
"""

from __future__ import annotations

import io
import lzma
import mimetypes
import zipfile
import zlib
from dataclasses import dataclass

MAX_MEMBERS = 1000
MAX_MEMBER_BYTES = 20 * 1024 * 1024
MAX_TOTAL_BYTES = 100 * 1024 * 1024
MAX_RATIO = 100  # uncompressed / compressed; XML compresses ~10-20x, bombs ~1000x


# What reading a damaged member raises, beyond BadZipFile and OSError: each decompressor has
# its own error for corrupt data (zlib.error, lzma.LZMAError; bz2 raises OSError), a stream cut
# short is EOFError, an offset pointing before the file ValueError ("negative seek value"),
# an unsupported method NotImplementedError, an encrypted member RuntimeError (found by fuzzing).
_READ_ERRORS = (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError, EOFError,
                ValueError, zlib.error, lzma.LZMAError)


class ArchiveError(ValueError):
    def __init__(self, code: str, text: str) -> None:
        self.code = code
        super().__init__(text)


@dataclass(frozen=True)
class XdmDocument:
    index: int  # position in the zip's member list
    name: str  # path inside the archive, for display
    size: int
    content_type: str

    @property
    def is_xml(self) -> bool:
        return self.name.lower().endswith(".xml")


def _archive(data: bytes) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
        # NotImplementedError: a central directory naming a zip version zipfile does not read
        # ("zip file version 25.5"; found by fuzzing).
        raise ArchiveError("bad-zip", "The attachment is not a readable zip file.") from exc
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError("too-many-members", "The archive has too many files.")
    if sum(i.file_size for i in infos) > MAX_TOTAL_BYTES:
        raise ArchiveError("too-large", "The archive expands to more than we open.")
    return archive


def _check_member(info: zipfile.ZipInfo) -> None:
    if info.file_size > MAX_MEMBER_BYTES:
        raise ArchiveError("too-large", "A file in the archive is too large to open.")
    if info.file_size > 1024 * 1024 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise ArchiveError("suspicious-ratio", "A file in the archive is compressed implausibly well.")


def documents(data: bytes) -> tuple[XdmDocument, ...]:
    """The documents of the XDM package (metadata and index files left out)."""
    archive = _archive(data)
    found = []
    for index, info in enumerate(archive.infolist()):
        name = info.filename
        upper = name.upper()
        leaf = upper.rsplit("/", 1)[-1]
        # The prefix first: is_dir() raises IndexError for an empty name (found by fuzzing).
        if not upper.startswith("IHE_XDM/") or info.is_dir():
            continue
        if leaf in {"METADATA.XML", "INDEX.HTM", "README.TXT"}:
            continue
        _check_member(info)
        found.append(
            XdmDocument(
                index=index,
                name=name,
                size=info.file_size,
                content_type=mimetypes.guess_type(leaf.lower())[0] or "application/octet-stream",
            )
        )
    if not found and not any(n.upper().startswith("IHE_XDM/") for n in archive.namelist()):
        raise ArchiveError("not-xdm", "The zip file is not an IHE XDM package.")
    return tuple(found)


def read_document(data: bytes, index: int) -> tuple[XdmDocument, bytes]:
    for document in documents(data):
        if document.index == index:
            archive = _archive(data)
            info = archive.infolist()[index]
            try:
                with archive.open(info) as handle:
                    content = handle.read(MAX_MEMBER_BYTES + 1)
            except _READ_ERRORS as exc:
                raise ArchiveError("bad-zip", "A file in the archive cannot be read.") from exc
            if len(content) > MAX_MEMBER_BYTES:  # the header lied about the size
                raise ArchiveError("too-large", "A file in the archive is too large to open.")
            return document, content
    raise ArchiveError("no-such-document", "No such document in the archive.")
