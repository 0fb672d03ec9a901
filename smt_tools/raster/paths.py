"""Raster paths as users write them: local files, URLs and GDAL virtual file systems.

A *GDAL path* is one GDAL opens itself, without a local file behind it: a URL
(``https://``, ``http://``, ``ftp://``, ``s3://``, ``gs://``, ``az://``, ``oss://``, the
archive forms ``zip://``, ``tar://``, ``gzip://`` and their ``zip+https://`` combinations) or a
virtual file system path (``/vsicurl/``, ``/vsis3/``, ``/vsigs/``, ``/vsiaz/``, ``/vsizip/``,
…). GDAL paths are:

- kept as written (only surrounding spaces and the scheme's case are normalised): never made
  absolute, never resolved against a CSV's folder;
- checked by opening them through rasterio (:func:`smt_tools.raster.handles.open_raster`), not
  on the local disk;
- identified (tile and source ids) by :func:`path_identity`, the path without credentials, so
  a re-signed URL keeps its ids;
- printed through :func:`redact`: the password of ``user:password@`` and signature / token
  query values become ``***``;
- fingerprinted for incremental ingest by :func:`file_fingerprint`: the size and
  modification time GDAL reports from the server's ``Content-Length`` and ``Last-Modified``
  headers (``-1`` each when unknown: such a source is re-scanned by every ingest).

This module imports no rasterio at import time (``smt_tools.tiletable`` uses it).
"""

from __future__ import annotations

import ctypes
import email.utils
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: URL schemes GDAL (through rasterio) opens; ``zip+https://`` style combinations too.
URL_SCHEMES: frozenset[str] = frozenset(
    {"http", "https", "ftp", "s3", "gs", "az", "oss", "zip", "tar", "gzip"}
)
#: GDAL virtual file system of each URL scheme (archives and ``file`` excluded).
_VSI_OF_SCHEME = {
    "http": "/vsicurl/",
    "https": "/vsicurl/",
    "ftp": "/vsicurl/",
    "s3": "/vsis3/",
    "gs": "/vsigs/",
    "az": "/vsiaz/",
    "oss": "/vsioss/",
}
#: Network virtual file systems (their files are stat'ed through HTTP headers).
_NETWORK_VSI = (
    "/vsicurl/",
    "/vsicurl?",
    "/vsis3/",
    "/vsigs/",
    "/vsiaz/",
    "/vsiadls/",
    "/vsioss/",
    "/vsiswift/",
    "/vsiwebhdfs/",
    "/vsihdfs/",
)
_ARCHIVE_VSI = ("/vsizip/", "/vsitar/", "/vsigzip/", "/vsi7z/", "/vsirar/")
#: Value shown instead of a credential.
MASK = "***"
#: Fingerprint value meaning "unknown" (size and mtime).
UNKNOWN = -1

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_VSI = re.compile(r"^/vsi[a-z0-9_]+[/?]")
#: ``scheme://user:password@`` (the userinfo of a URL with a password).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s?#:]*):[^/@\s?#]*@")
#: Query parameters that carry credentials (AWS / GCS / Azure SAS signatures, tokens, keys).
_SECRET_PARAM = (
    r"x-amz-[a-z0-9-]+|x-goog-[a-z0-9-]+|signature|sig|token|access_token|api_key|apikey|"
    r"key|password|passwd|secret|credential|se|st|sp|sv|ss|srt|spr|sr|skoid|sktid|skt|ske|"
    r"sks|skv|policy|key-pair-id|expires"
)
_QUERY_SECRET = re.compile(
    rf"(?i)([?&](?:{_SECRET_PARAM})=)[^&#\s'\"]*?(?=[&#\s'\"]|[:;,)]\s|[:;,.)]?$)"
)


def is_gdal_path(path: str | os.PathLike[str]) -> bool:
    """True for a URL GDAL opens (``s3://``, ``https://`` …) or a ``/vsi…/`` path."""
    s = os.fspath(path).strip()
    if _VSI.match(s):
        return True
    m = _SCHEME.match(s)
    if m is None:
        return False
    parts = m.group(1).lower().split("+")
    return all(p in URL_SCHEMES for p in parts)


def is_remote(path: str | os.PathLike[str]) -> bool:
    """True when GDAL reads ``path`` over the network (a URL or a network ``/vsi…/`` path,
    an archive inside one included)."""
    s = normalize_path(path)
    if not is_gdal_path(s):
        return False
    return _network_path(_vsi_form(s)) is not None


def normalize_path(path: str | os.PathLike[str]) -> str:
    """The stored form of a raster path.

    Local paths: absolute, normalised POSIX form (no symlink resolution: users see their
    path); ``file://`` URLs become local paths. GDAL paths: as written, with surrounding
    spaces removed and the scheme in lower case.
    """
    s = os.fspath(path)
    stripped = s.strip()
    if stripped.lower().startswith("file://"):
        return Path(os.path.abspath(unquote(urlsplit(stripped).path))).as_posix()
    if not is_gdal_path(stripped):
        return Path(os.path.abspath(s)).as_posix()
    m = _SCHEME.match(stripped)
    if m is not None:
        return m.group(1).lower() + stripped[len(m.group(1)) :]
    return stripped


def path_identity(path: str | os.PathLike[str]) -> str:
    """What ids are derived from: :func:`normalize_path` without credentials (a URL's
    ``user:password@`` and signature / token query parameters), so the same object keeps its
    tile ids when its URL is re-signed. Local paths: their normalised form."""
    s = normalize_path(path)
    if not is_gdal_path(s):
        return s
    s = _USERINFO.sub(lambda m: m.group("scheme"), s)
    if "?" not in s:
        return s
    head, _, query = s.partition("?")
    frag = ""
    if "#" in query:
        query, _, frag = query.partition("#")
    kept = [
        kv
        for kv in query.split("&")
        if kv and not _QUERY_SECRET.match("&" + kv.split("=")[0] + "=")
    ]
    out = head + ("?" + "&".join(kept) if kept else "")
    return out + ("#" + frag if frag else "")


def resolve_path(value: str | os.PathLike[str], base: str | os.PathLike[str]) -> str:
    """``value`` as listed in a CSV in folder ``base``: a relative local path is resolved
    against ``base``; absolute local paths and GDAL paths are kept (normalised)."""
    s = os.fspath(value)
    if is_gdal_path(s) or s.strip().lower().startswith("file://"):
        return normalize_path(s)
    return normalize_path(os.path.join(os.fspath(base), s))


def redact(text: str) -> str:
    """``text`` with credentials in URLs replaced by ``***``: the password of any URL
    (``user:***@``, as the catalog's URLs are shown) and the values of signature / token query parameters (``X-Amz-Signature``, ``sig``,
    ``token`` …). Safe on any message (text without URLs is returned unchanged)."""
    out = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)
    return _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, out)


def path_stem(path: str | os.PathLike[str]) -> str:
    """File name without extension, for URLs without their query string
    (``https://h/a/b.tif?sig=…`` -> ``b``)."""
    s = os.fspath(path)
    if is_gdal_path(s):
        s = s.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("!", 1)[-1]
    return os.path.splitext(os.path.basename(s))[0]


# --- fingerprints ------------------------------------------------------------------------


def file_fingerprint(path: str | os.PathLike[str]) -> tuple[int, float]:
    """(size in bytes, modification time in seconds since the epoch) of a raster.

    Local files: ``os.stat``. Network GDAL paths: ``Content-Length`` and ``Last-Modified`` of
    the object (for a file inside an archive: of the archive) as GDAL reads them
    (``VSIGetFileMetadata(…, "HEADERS")``, one HEAD request). A value that cannot be known is
    :data:`UNKNOWN` (``-1``); ``catalog ingest`` re-scans a source with an unknown value.
    """
    s = normalize_path(path)
    if not is_gdal_path(s):
        st = os.stat(s)
        return int(st.st_size), float(st.st_mtime)
    target = _vsi_form(s)
    local = _local_archive(target)
    if local is not None:
        try:
            st = os.stat(local)
        except OSError:
            return UNKNOWN, float(UNKNOWN)
        return int(st.st_size), float(st.st_mtime)
    net = _network_path(target)
    if net is None:
        return UNKNOWN, float(UNKNOWN)
    headers = _http_headers(net)
    size = _int_or_unknown(headers.get("content-length"))
    mtime = float(UNKNOWN)
    modified = headers.get("last-modified")
    if modified:
        try:
            mtime = float(email.utils.parsedate_to_datetime(modified).timestamp())
        except (TypeError, ValueError, IndexError):
            mtime = float(UNKNOWN)
    return size, mtime


def clear_remote_cache() -> None:
    """Forget what GDAL cached about network files in this process (sizes, headers,
    blocks), so a re-ingest sees objects rewritten since they were first read."""
    lib = _gdal()
    if lib is None:
        return
    try:
        lib.VSICurlClearCache()
    except AttributeError:
        pass


def _int_or_unknown(text: str | None) -> int:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return UNKNOWN


def _vsi_form(s: str) -> str:
    """``s`` as a ``/vsi…/`` path (``s3://b/k`` -> ``/vsis3/b/k``); archive URL forms
    (``zip://a.zip!x.tif``) become ``/vsizip/a.zip/x.tif``."""
    m = _SCHEME.match(s)
    if m is None:
        return s
    parts = m.group(1).lower().split("+")
    rest = s[len(m.group(0)) :]
    if parts[0] in ("zip", "tar", "gzip"):
        inner_scheme = parts[1] if len(parts) > 1 else None
        archive, _, member = rest.partition("!")
        inner = _vsi_form(f"{inner_scheme}://{archive}") if inner_scheme else archive
        vsi = f"/vsi{parts[0]}/{inner}"
        return vsi + (("/" + member.lstrip("/")) if member else "")
    scheme = parts[0]
    if scheme in ("http", "https", "ftp"):
        return "/vsicurl/" + s
    if scheme in _VSI_OF_SCHEME:
        return _VSI_OF_SCHEME[scheme] + rest
    return s


def _archive_of(vsi: str) -> str | None:
    """The archive part of ``/vsizip/ARCHIVE/member`` (``{…}`` braces removed), or None."""
    for prefix in _ARCHIVE_VSI:
        if vsi.startswith(prefix):
            rest = vsi[len(prefix) :]
            if rest.startswith("{"):
                end = rest.find("}")
                return rest[1:end] if end > 0 else None
            m = re.search(r"(?i)\.(zip|tar|tgz|tar\.gz|gz|7z|rar)(?=/|$)", rest)
            return rest[: m.end()] if m else rest
    return None


def _local_archive(vsi: str) -> str | None:
    archive = _archive_of(vsi)
    if archive is None or is_gdal_path(archive):
        return None
    return archive


def _network_path(vsi: str) -> str | None:
    """The network ``/vsi…/`` path whose headers fingerprint ``vsi`` (the archive for a file
    inside a remote archive), or None when ``vsi`` is not on the network."""
    archive = _archive_of(vsi)
    if archive is not None:
        return _network_path(_vsi_form(archive)) if is_gdal_path(archive) else None
    return vsi if vsi.startswith(_NETWORK_VSI) else None


_LIB: list[ctypes.CDLL | None] = []


def _gdal() -> ctypes.CDLL | None:
    """GDAL's C library as rasterio loaded it (its extension module links it), or None."""
    if not _LIB:
        lib: ctypes.CDLL | None
        try:
            import rasterio._env as env

            lib = ctypes.CDLL(env.__file__)
            meta = lib.VSIGetFileMetadata
            meta.restype = ctypes.POINTER(ctypes.c_char_p)
            meta.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
            lib.CSLDestroy.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
            lib.CSLDestroy.restype = None
            lib.VSICurlClearCache.restype = None
        except (ImportError, OSError, AttributeError):
            lib = None
        _LIB.append(lib)
    return _LIB[0]


def _http_headers(vsi: str) -> dict[str, str]:
    """Lower-cased HTTP headers of a network ``/vsi…/`` object (empty when unavailable)."""
    lib = _gdal()
    if lib is None:
        return {}
    try:
        listed = lib.VSIGetFileMetadata(vsi.encode("utf-8"), b"HEADERS", None)
    except (OSError, ValueError):
        return {}
    if not listed:
        return {}
    out: dict[str, str] = {}
    try:
        i = 0
        while listed[i]:
            key, sep, value = listed[i].decode("utf-8", "replace").partition("=")
            if sep:
                out[key.strip().lower()] = value.strip()
            i += 1
    finally:
        lib.CSLDestroy(listed)
    return out
