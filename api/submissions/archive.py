"""Checks a ``docker save`` archive (.tar or .tar.gz) while it streams in, without unpacking it.

``ArchiveInspector`` is fed the archive's bytes in order (any chunk sizes) and reads only what it
needs: tar headers, ``manifest.json`` and the image's config JSON. Layer data are skipped as they pass.
A gzip archive is recognised by its magic bytes and decompressed once, in the same pass, with bounded
output per step (a decompression bomb is stopped by ``max_uncompressed``). Both the legacy layout of
Docker < 25 (``<id>.json``, ``<layer>/layer.tar``, ``manifest.json``) and the OCI layout of
Docker ≥ 25 (``blobs/sha256/<hex>``, ``index.json``, ``manifest.json``) are accepted.

Checks: the data is a tar (header checksums), member paths cannot escape (no absolute paths, no
``..``, no links that point outside, no device files), ``manifest.json`` is readable and names exactly
one image with exactly one tag, its config and layers are in the archive, the config JSON is readable,
its digest matches the name it is stored under, and the image is ``linux/amd64``.

The image id is the config blob's digest, ``sha256:<hex>``: what ``docker load`` reports.

The work per byte is bounded (``ArchiveLimits``, from settings): at most ``max_members`` tar entries
(a 3 MiB gzip of millions of empty headers otherwise kept the API busy 39 s), at most
``max_metadata_bytes`` of headers (512-byte blocks and pax/GNU extended headers, each of those at most
64 KiB), JSON members of at most ``max_json_bytes`` (and never nested past the parser's depth), and
past the first GiB no more than ``max_inflate_ratio`` decompressed bytes per compressed byte.

Every member has exactly one name: a GNU long name (``././@LongLink``) and a pax ``path`` that
disagree, a pax sparse name (``GNU.sparse.name``, which Docker's reader honours), a ustar prefix in a
non-ustar header, or a name in a global pax header are refused, since Docker and this check would
read different names (likewise link targets: GNU long link vs pax ``linkpath``).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ArchiveError", "ArchiveLimits", "ImageInfo", "ArchiveInspector", "inspect_file"]

BLOCK = 512
_KEEP_MAX_MEMBER = 1 << 20  # small members we keep (manifest, configs): at most 1 MiB each
_KEEP_BUDGET = 32 << 20  # and 32 MiB together; beyond that inspect_file() reads the config back
_INFLATE_STEP = 4 << 20
_EXT_MAX = 64 << 10  # one pax / GNU long-name header: a name or a few records, never more than 64 KiB
_POSIX_MAGIC = b"ustar\x0000"
_PAX_RECORDS_PER_MEMBER = 8  # pax records in the whole archive: at most this many per allowed member
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ArchiveError(ValueError):
    """The archive is not a valid single-image ``docker save`` archive; the message says why."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on the work the check does per archive byte (settings ``archive_*``)."""

    max_members: int = 4096
    max_metadata_bytes: int = 8 << 20
    max_json_bytes: int = 4 << 20
    max_inflate_ratio: int = 100
    inflate_ratio_after: int = 1 << 30  # the ratio is judged once this much was decompressed

    @classmethod
    def from_settings(cls, settings) -> ArchiveLimits:
        return cls(max_members=settings.archive_max_members, max_metadata_bytes=settings.archive_max_metadata_bytes,
                   max_json_bytes=settings.archive_max_json_bytes, max_inflate_ratio=settings.archive_max_inflate_ratio)


def _default_limits() -> ArchiveLimits:
    try:
        from api.settings import get_settings

        return ArchiveLimits.from_settings(get_settings())
    except Exception:  # settings unreadable (a CLI run outside a deployment): the defaults
        return ArchiveLimits()


def _loads(data: bytes, what: str):
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"{what} is not valid JSON ({exc})") from None
    except RecursionError:
        raise ArchiveError(f"{what} is nested too deeply to be a docker save file") from None


@dataclass(frozen=True)
class ImageInfo:
    image_id: str  # "sha256:<hex>" of the config blob
    image_tag: str
    user: str
    architecture: str
    os: str
    compressed: bool
    layers: int
    uncompressed_bytes: int


@dataclass
class _Member:
    name: str
    size: int
    type: bytes
    linkname: str
    data: bytearray | None = None  # kept content (small members only)
    sha256: str | None = None


@dataclass
class _State:
    members: dict[str, _Member] = field(default_factory=dict)
    kept_bytes: int = 0


def _clean(name: str, what: str = "member") -> str:
    if not name or "\x00" in name:
        raise ArchiveError(f"archive {what} has an empty or invalid name")
    if name.startswith("/"):
        raise ArchiveError(f"archive {what} {name!r} has an absolute path; a docker save archive has only relative paths")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"archive {what} {name!r} contains '..'; a docker save archive never escapes its own root")
    return "/".join(parts)


def _parse_pax(data: bytes, budget: int | None = None) -> tuple[dict[str, str], int]:
    """The records of a pax header and how many there were (more than ``budget``: refused)."""
    out: dict[str, str] = {}
    pos = count = 0
    while pos < len(data):
        if data[pos] == 0:
            break
        count += 1
        if budget is not None and count > budget:
            raise ArchiveError("the archive's pax headers have more records than its members could need; "
                               "a docker save archive has a few per member")
        sp = data.find(b" ", pos)
        if sp < 0:
            raise ArchiveError("archive has a malformed pax header")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise ArchiveError("archive has a malformed pax header") from None
        if length <= 0 or pos + length > len(data):
            raise ArchiveError("archive has a malformed pax header")
        record = data[sp + 1 : pos + length - 1]
        key, eq, value = record.partition(b"=")
        if not eq:
            raise ArchiveError("archive has a malformed pax header")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out, count


class ArchiveInspector:
    """Push parser over a docker-save archive: ``feed(bytes)`` repeatedly, then ``finish()``."""

    def __init__(self, *, max_uncompressed: int | None = None, limits: ArchiveLimits | None = None) -> None:
        self.max_uncompressed = max_uncompressed
        self.limits = limits if limits is not None else _default_limits()
        self.entries = 0  # tar entries seen (members, repeated directories included)
        self.metadata_bytes = 0  # header blocks and extended-header data
        self.pax_records = 0  # over the whole archive: at most _PAX_RECORDS_PER_MEMBER x max_members
        self.compressed: bool | None = None
        self._inflater: Any = None  # a zlib.decompressobj() (its class is private to zlib)
        self._gz_done = False
        self._raw_seen = 0
        self._sniff = bytearray()
        self.tar_bytes = 0  # decompressed bytes parsed so far
        self._hdr = bytearray()
        self._remaining = 0  # data bytes of the current member still to come
        self._padding = 0
        self._current: _Member | None = None
        self._collect: bytearray | None = None
        self._hasher: Any = None  # a hashlib.sha256() while a kept member's data is read
        self._pending_name: str | None = None
        self._pending_link: str | None = None
        self._names: list[tuple[str, str]] = []  # (source, name) of the next member: GNU long name, pax path
        self._links: list[tuple[str, str]] = []
        self._pending_size: int | None = None
        self._pending_kind: bytes | None = None  # b"x" pax, b"L" longname, b"K" longlink, b"g" global
        self._ended = False
        self._zero_blocks = 0
        self.state = _State()

    # ---- feeding -------------------------------------------------------------------------
    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next bytes of the archive (raises ``ArchiveError`` as soon as it is wrong)."""
        if not data:
            return
        if self.compressed is None:
            self._sniff += data
            if len(self._sniff) < 2:
                return
            self.compressed = bytes(self._sniff[:2]) == b"\x1f\x8b"
            data, self._sniff = bytes(self._sniff), bytearray()
            if self.compressed:
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if not self.compressed:
            self._feed_tar(memoryview(data))
            return
        self._raw_seen += len(data)
        if self._gz_done:
            return
        buf = bytes(data)
        while buf:
            try:
                out = self._inflater.decompress(buf, _INFLATE_STEP)
            except zlib.error as exc:
                raise ArchiveError(f"the gzip stream is corrupt ({exc}); "
                                   "re-create it with docker save NAME | gzip > NAME.tar.gz") from None
            if out:
                self._feed_tar(memoryview(out))
            buf = self._inflater.unconsumed_tail
            if self._inflater.eof:
                rest = self._inflater.unused_data
                if rest[:2] == b"\x1f\x8b":  # concatenated gzip members
                    self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    buf = rest
                else:
                    self._gz_done = True  # trailing garbage after the gzip stream is ignored
                    return

    def _feed_tar(self, mv: memoryview) -> None:
        n = len(mv)
        self.tar_bytes += n
        if self.max_uncompressed is not None and self.tar_bytes > self.max_uncompressed:
            raise ArchiveError(
                f"the archive unpacks to more than {self.max_uncompressed} bytes; upload a smaller image"
            )
        lim = self.limits
        if (self.compressed and self.tar_bytes > lim.inflate_ratio_after
                and self.tar_bytes > lim.max_inflate_ratio * self._raw_seen):
            raise ArchiveError(
                f"the gzip stream unpacks to more than {lim.max_inflate_ratio} times its size ({self.tar_bytes} bytes "
                f"from {self._raw_seen}); a docker save archive does not compress like that, re-create it with "
                "docker save NAME | gzip > NAME.tar.gz")
        i = 0
        while i < n:
            if self._ended:
                return
            if self._remaining:
                take = min(self._remaining, n - i)
                piece = mv[i : i + take]
                if self._collect is not None:
                    self._collect += piece
                if self._hasher is not None:
                    self._hasher.update(piece)
                self._remaining -= take
                i += take
                if self._remaining == 0:
                    self._member_done()
                continue
            if self._padding:
                take = min(self._padding, n - i)
                self._padding -= take
                i += take
                continue
            if not self._hdr and n - i >= BLOCK:  # a whole header in this piece: no copy through _hdr
                self._header(bytes(mv[i : i + BLOCK]))
                i += BLOCK
                continue
            take = min(BLOCK - len(self._hdr), n - i)
            self._hdr += mv[i : i + take]
            i += take
            if len(self._hdr) == BLOCK:
                block, self._hdr = bytes(self._hdr), bytearray()
                self._header(block)

    def _start_extension(self, kind: bytes, size: int) -> None:
        """A pax or GNU long-name/link header: bounded, its data collected for the member after it."""
        lim = self.limits
        if size > _EXT_MAX:
            raise ArchiveError(f"archive has an extended (pax or GNU long-name) header of {size} bytes, over "
                               f"{_EXT_MAX // 1024} KiB; a docker save archive has only short names")
        self.metadata_bytes += size
        if self.metadata_bytes > lim.max_metadata_bytes:
            raise ArchiveError(f"the archive's headers take more than {lim.max_metadata_bytes} bytes; a docker save "
                               "archive has a few hundred short headers (setting SEGARENA_ARCHIVE_MAX_METADATA_BYTES)")
        self._pending_kind = kind
        self._start_data(size, collect=True, hasher=False)
        self._current = None

    def _check_one_name(self) -> None:
        """A member named (or linked) two different ways by its headers is refused: readers would disagree."""
        names, links = self._names, self._links
        self._names, self._links = [], []
        for what, sources in (("name", names), ("link target", links)):
            if len({value for _, value in sources}) > 1:
                said = ", ".join(f"{source} {value!r}" for source, value in sources)
                raise ArchiveError(f"an archive member has two different {what}s ({said}); Docker and this check "
                                   "would read different files, re-create the archive with docker save")

    def _tarinfo(self, block: bytes) -> tarfile.TarInfo | None:
        """The header in ``block``, or None for an end-of-archive (zero) block."""
        if block == b"\0" * BLOCK:
            self._zero_blocks += 1
            if self._zero_blocks >= 2:
                self._ended = True
            return None
        if self._zero_blocks:
            raise ArchiveError("the tar archive has data after an end-of-archive marker")
        try:
            return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            if not self.state.members and self._pending_kind is None:
                raise ArchiveError(
                    "this is not a tar archive; upload the output of docker save NAME | gzip > NAME.tar.gz"
                ) from None
            raise ArchiveError(f"the tar archive is damaged at byte {self.tar_bytes} ({exc})") from None

    def _header(self, block: bytes) -> None:
        info = self._tarinfo(block)
        if info is None:
            return
        kind = info.type
        size = info.size
        lim = self.limits
        self.metadata_bytes += BLOCK
        if kind in (b"x", b"g", b"L", b"K"):
            self._start_extension(kind, size)
            return
        self.entries += 1
        if self.entries > lim.max_members:
            raise ArchiveError(f"the archive has more than {lim.max_members} members; a docker save archive has a few "
                               "per layer (setting SEGARENA_ARCHIVE_MAX_MEMBERS)")
        if self.metadata_bytes > lim.max_metadata_bytes:
            raise ArchiveError(f"the archive's headers take more than {lim.max_metadata_bytes} bytes; a docker save "
                               "archive has a few hundred short headers (setting SEGARENA_ARCHIVE_MAX_METADATA_BYTES)")
        self._check_one_name()
        if block[257:265] != _POSIX_MAGIC and block[345:500].strip(b"\0") and kind != tarfile.GNUTYPE_SPARSE:
            raise ArchiveError(f"archive member {info.name!r} is not a ustar header but carries a name prefix; "
                               "Docker and this check would read different names, re-create the archive with docker save")
        name = self._pending_name if self._pending_name is not None else info.name
        linkname = self._pending_link if self._pending_link is not None else info.linkname
        if self._pending_size is not None:
            size = self._pending_size
        self._pending_name = self._pending_link = self._pending_size = None
        if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
            raise ArchiveError(f"archive member {name!r} is a device or pipe; a docker save archive has none")
        clean = _clean(name)
        if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            if not linkname or linkname.startswith("/"):
                raise ArchiveError(f"archive link {name!r} points to {linkname!r}, outside the archive")
            base = posixpath.dirname(clean) if kind == tarfile.SYMTYPE else ""
            target = posixpath.normpath(posixpath.join(base, linkname))
            if target == ".." or target.startswith("../") or target.startswith("/"):
                raise ArchiveError(f"archive link {name!r} points to {linkname!r}, outside the archive")
            linkname = target
            size = 0 if kind == tarfile.SYMTYPE else size
        elif kind not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.DIRTYPE):
            raise ArchiveError(f"archive member {name!r} has an unsupported type {kind!r}")
        if clean in self.state.members and kind != tarfile.DIRTYPE:
            raise ArchiveError(f"archive member {name!r} appears twice")
        member = _Member(name=clean, size=size, type=kind, linkname=linkname)
        self.state.members[clean] = member
        self._current = member
        keep = (
            kind in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
            and size <= _KEEP_MAX_MEMBER
            and self.state.kept_bytes + size <= _KEEP_BUDGET
            and (clean.endswith(".json") or clean.startswith("blobs/"))
        )
        if keep:
            self.state.kept_bytes += size
        has_data = kind not in (tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE)
        self._start_data(size if has_data else 0, collect=keep, hasher=keep)

    def _start_data(self, size: int, *, collect: bool, hasher: bool) -> None:
        self._remaining = size
        self._padding = (-size) % BLOCK
        self._collect = bytearray() if collect else None
        self._hasher = hashlib.sha256() if hasher else None
        if size == 0:
            self._member_done()

    def _extension_done(self, kind: bytes, data: bytearray) -> None:
        """A pax or GNU long-name/link header's data is complete: note what it sets for the next member."""
        budget = _PAX_RECORDS_PER_MEMBER * self.limits.max_members - self.pax_records
        if kind in (b"g", b"x"):
            pax, records = _parse_pax(bytes(data), budget)
            self.pax_records += records
        if kind == b"g":
            named = sorted(k for k in pax if k in ("path", "linkpath", "size") or k.startswith("GNU.sparse."))
            if named:
                raise ArchiveError(f"archive has a global pax header setting {', '.join(named)}; tar readers "
                                   "disagree on it, re-create the archive with docker save")
        if kind == b"x":
            sparse = sorted(k for k in pax if k.startswith("GNU.sparse."))
            if sparse:
                raise ArchiveError(f"archive has a sparse-file pax header ({sparse[0]}); Docker reads a name and size "
                                   "from it that this check would not, and docker save writes none")
            if "path" in pax:
                self._pending_name = pax["path"]
                self._names.append(("pax path", pax["path"]))
            if "linkpath" in pax:
                self._pending_link = pax["linkpath"]
                self._links.append(("pax linkpath", pax["linkpath"]))
            if "size" in pax:
                try:
                    self._pending_size = int(pax["size"])
                except ValueError:
                    raise ArchiveError("archive has a malformed pax size") from None
        elif kind == b"L":
            self._pending_name = bytes(data).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            self._names.append(("GNU long name", self._pending_name))
        elif kind == b"K":
            self._pending_link = bytes(data).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            self._links.append(("GNU long link", self._pending_link))

    def _member_done(self) -> None:
        data, self._collect = self._collect, None
        hasher, self._hasher = self._hasher, None
        if self._pending_kind is not None and self._current is None:
            kind, self._pending_kind = self._pending_kind, None
            assert data is not None
            self._extension_done(kind, data)
            return
        if self._current is not None:
            if data is not None:
                self._current.data = data
            if hasher is not None:
                self._current.sha256 = hasher.hexdigest()
        self._current = None

    # ---- conclusion ----------------------------------------------------------------------
    def truncated(self) -> bool:
        return bool(self._remaining or self._hdr or self._pending_kind or self._pending_name or self._names or self._links)

    def finish(self, *, read_back: Path | None = None) -> ImageInfo:
        """Check what was fed and describe the image; ``read_back`` lets it reread an unkept config."""
        if self.compressed is None:
            raise ArchiveError("the archive is empty or too short to be a tar archive")
        if self.compressed and not self._gz_done and not self._inflater.eof:
            raise ArchiveError("the gzip stream is truncated; the upload may have been cut off, upload it again")
        if self.truncated():
            raise ArchiveError("the tar archive is truncated; the upload may have been cut off, upload it again")
        members = self.state.members
        if not members:
            raise ArchiveError("the tar archive is empty")
        entry = self._manifest_entry(members)
        tags = entry.get("RepoTags")
        if not isinstance(tags, list) or len(tags) != 1 or not isinstance(tags[0], str) or not tags[0]:
            n = len(tags) if isinstance(tags, list) else 0
            raise ArchiveError(f"the image has {n} tags; save it by exactly one name:tag (docker save NAME:TAG)")
        config_name = entry.get("Config")
        if not isinstance(config_name, str):
            raise ArchiveError("manifest.json names no Config")
        config_name = _clean(config_name, "config path")
        layers = entry.get("Layers") or []
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ArchiveError("manifest.json has a malformed Layers list")
        for layer in layers:
            if self._resolve(_clean(layer, "layer path")) is None:
                raise ArchiveError(f"manifest.json names layer {layer!r}, which is not in the archive")
        config = self._resolve(config_name)
        if config is None:
            raise ArchiveError(f"manifest.json names config {config_name!r}, which is not in the archive")
        digest, cfg = self._config(config, config_name, read_back)
        arch = str(cfg.get("architecture") or "")
        os_ = str(cfg.get("os") or "")
        if arch != "amd64":
            raise ArchiveError(f"the image is built for {arch or 'an unknown architecture'}; "
                               "build it for linux/amd64 (docker build --platform linux/amd64)")
        if os_ and os_ != "linux":
            raise ArchiveError(f"the image is built for {os_}; build it for linux/amd64")
        raw_inner = cfg.get("config")
        inner = raw_inner if isinstance(raw_inner, dict) else {}
        user = str(inner.get("User") or "")
        return ImageInfo(
            image_id=f"sha256:{digest}", image_tag=tags[0], user=user[:64], architecture=arch, os=os_ or "linux",
            compressed=bool(self.compressed), layers=len(layers), uncompressed_bytes=self.tar_bytes,
        )

    def _manifest_entry(self, members: dict[str, _Member]) -> dict[str, Any]:
        """The one image entry of manifest.json."""
        manifest = members.get("manifest.json")
        if manifest is None or manifest.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
            raise ArchiveError("manifest.json is missing: this is not a docker save archive "
                               "(docker save NAME | gzip > NAME.tar.gz)")
        manifest_max = min(_KEEP_MAX_MEMBER, self.limits.max_json_bytes)
        if manifest.data is None or len(manifest.data) > manifest_max:
            raise ArchiveError(f"manifest.json is larger than {manifest_max} bytes; a docker save manifest is a few kilobytes")
        entries = _loads(bytes(manifest.data), "manifest.json")
        if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
            count = len(entries) if isinstance(entries, list) else "no"
            raise ArchiveError(f"manifest.json lists {count} images; save exactly one image (docker save NAME:TAG)")
        return entries[0]

    def _config(self, config: _Member, config_name: str, read_back: Path | None) -> tuple[str, dict[str, Any]]:
        """The image config's digest and JSON object, checked against its name and the size limit."""
        data: bytes | bytearray | None = config.data
        digest = config.sha256
        json_max = self.limits.max_json_bytes
        if config.size > json_max:
            raise ArchiveError(f"the image config is {config.size} bytes, over {json_max} "
                               "(setting SEGARENA_ARCHIVE_MAX_JSON_BYTES); an image config is a few kilobytes")
        if data is None and read_back is not None:
            data = _read_member(read_back, config.name, limit=json_max)
            digest = hashlib.sha256(data).hexdigest()
        if data is None:
            raise ArchiveError("the image config is too large to check (over 1 MiB)")
        stem = _HEX64.search(posixpath.basename(config_name))
        if stem and stem.group(0) != digest:
            raise ArchiveError(f"the image config {config_name!r} does not match its digest; the archive is damaged")
        cfg = _loads(bytes(data), f"the image config {config_name!r}")
        if not isinstance(cfg, dict):
            raise ArchiveError("the image config is not a JSON object")
        return str(digest), cfg

    def _resolve(self, name: str, depth: int = 0) -> _Member | None:
        member = self.state.members.get(name)
        if member is None or depth > 8:
            return None
        if member.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            return self._resolve(member.linkname, depth + 1)
        return member


def _read_member(path: Path, name: str, *, limit: int) -> bytes:
    try:
        with tarfile.open(path, "r:*") as tar:
            member = tar.getmember(name)
            f = tar.extractfile(member)
            if f is None or member.size > limit:
                raise ArchiveError(f"archive member {name!r} cannot be read")
            return f.read()
    except (tarfile.TarError, KeyError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"archive member {name!r} cannot be read ({exc})") from None


def inspect_file(path: Path, *, max_uncompressed: int | None = None, chunk: int = 8 << 20,
                 limits: ArchiveLimits | None = None) -> ImageInfo:
    """Check an archive already on disk (the same checks as while streaming)."""
    inspector = ArchiveInspector(max_uncompressed=max_uncompressed, limits=limits)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            inspector.feed(block)
    return inspector.finish(read_back=Path(path))
