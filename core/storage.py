"""One home for where batch data lives: a local path or an ``s3://`` URI.

Every read and write of a location goes through pyarrow's filesystems, so the same code
serves a directory and an S3-compatible object store (AWS S3, MinIO, s3proxy). An object
store is configured only by the standard AWS variables, read when a client is made:
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``; unset means AWS itself),
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``
(or ``AWS_DEFAULT_REGION``). ``spark_s3a_conf`` turns the same variables into the
``spark.hadoop.fs.s3a.*`` settings, so a Spark job reads the same store as ``s3a://``.

An object store has no rename: ``write_bytes`` is one PUT, which readers see whole or not
at all, and that is the only atomic step ``batch.output`` relies on there.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import duckdb
import pyarrow.dataset as ds
import pyarrow.fs as pafs

S3 = "s3://"
# Newer AWS SDKs send flexible checksums that some S3-compatible servers (s3proxy 2.6.0)
# reject with XAmzContentSHA256Mismatch; AWS S3 accepts either, so ask only when required.
_CHECKSUM_ENV = {
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
}


def is_s3(location: str | Path) -> bool:
    return str(location).startswith(S3)


def as_location(value: str | Path) -> str:
    """A setting or CLI value as a location: ``s3://`` kept verbatim, local paths absolute."""
    text = str(value)
    return text.rstrip("/") if is_s3(text) else str(Path(text).expanduser().absolute())


def join(location: str, *parts: str) -> str:
    return posixpath.join(location, *parts) if is_s3(location) else str(Path(location, *parts))


def name(location: str) -> str:
    return posixpath.basename(location.rstrip("/"))


def endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``location`` and the path inside it (``bucket/key`` for S3)."""
    if not is_s3(location):
        return pafs.LocalFileSystem(), as_location(location)
    return _s3(endpoint(), region()), location[len(S3) :]


@lru_cache(maxsize=4)
def _s3(endpoint_url: str | None, region_name: str) -> pafs.S3FileSystem:
    for key, value in _CHECKSUM_ENV.items():
        os.environ.setdefault(key, value)
    # The SDK's default 3 s stall limit cut reads short on a loaded box; a slow store is not
    # a dead one.
    options: dict[str, object] = {
        "region": region_name,
        "allow_bucket_creation": True,
        "connect_timeout": 10,
        "request_timeout": 60,
    }
    if endpoint_url:
        parsed = urlparse(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
        options |= {"endpoint_override": parsed.netloc, "scheme": parsed.scheme}
    # Keys and session token: the SDK's own chain (AWS_ACCESS_KEY_ID, ... then profiles).
    return pafs.S3FileSystem(**options)


def exists(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type == pafs.FileType.File


def read_bytes(location: str) -> bytes:
    """The whole object; FileNotFoundError if there is none."""
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as stream:
        return bytes(stream.read())


def write_bytes(location: str, data: bytes) -> None:
    """One PUT on S3 (readers see the old object or the new one); local: temp then rename."""
    fs, path = filesystem(location)
    if is_s3(location):
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)


def make_dirs(location: str) -> None:
    fs, path = filesystem(location)
    fs.create_dir(path, recursive=True)


def list_files(location: str, recursive: bool = False) -> list[str]:
    """Locations of the files under ``location`` (none if it does not exist), sorted."""
    fs, path = filesystem(location)
    selector = pafs.FileSelector(path, allow_not_found=True, recursive=recursive)
    found = [i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File]
    return sorted(S3 + p if is_s3(location) else p for p in found)


def list_dirs(location: str) -> list[str]:
    """Names of the directories (key prefixes) directly under ``location``."""
    fs, path = filesystem(location)
    selector = pafs.FileSelector(path, allow_not_found=True)
    return sorted(
        i.base_name for i in fs.get_file_info(selector) if i.type == pafs.FileType.Directory
    )


def delete_dir(location: str) -> None:
    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def delete_tree(location: str) -> None:
    """Delete every file under ``location``, one by one (some S3-compatible servers take
    minutes over a nested prefix deleted at once)."""
    fs, _ = filesystem(location)
    for found in list_files(location, recursive=True):
        with contextlib.suppress(FileNotFoundError):  # the file went; pyarrow's parent check
            fs.delete_file(filesystem(found)[1])


def dataset(files: list[str] | str, file_format: str = "parquet") -> ds.Dataset:
    """An Arrow dataset over one location or a list of files in one store; DuckDB scans it."""
    first = files if isinstance(files, str) else files[0]
    fs, _ = filesystem(first)
    paths = filesystem(files)[1] if isinstance(files, str) else [filesystem(f)[1] for f in files]
    return ds.dataset(paths, format=file_format, filesystem=fs)


def attach(con: duckdb.DuckDBPyConnection, *locations: str) -> None:
    """Let ``con``'s database (all its cursors) read and write ``s3://`` through pyarrow's
    client, if any of ``locations`` is there: DuckDB's own httpfs would be downloaded."""
    if not any(is_s3(location) for location in locations) or "s3" in con.list_filesystems():
        return
    con.register_filesystem(_duckdb_filesystem(_s3(endpoint(), region())))


def _duckdb_filesystem(fs: pafs.FileSystem) -> Any:
    """pyarrow's client as the fsspec filesystem DuckDB takes. DuckDB's scan threads share
    one handle and each seeks then reads, so a shared position mixed their reads up: each
    thread keeps its own, reads are positional (``read_at``), and looped until whole (an S3
    body cut off mid-transfer reads short, which DuckDB treats as an error)."""
    from fsspec.implementations.arrow import ArrowFile, ArrowFSWrapper  # 0.3 s: only if used

    class PositionalReads(ArrowFile):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.position = threading.local()

        def tell(self) -> int:
            return int(getattr(self.position, "at", 0))

        def seek(self, offset: int, whence: int = 0) -> int:
            base = (0, self.tell(), self.stream.size())[whence]
            self.position.at = base + offset
            return self.tell()

        def read(self, length: int = -1) -> bytes:
            at, size = self.tell(), self.stream.size()
            length = size - at if length is None or length < 0 else min(length, size - at)
            data = b""
            while len(data) < length:
                more = self.stream.read_at(length - len(data), at + len(data))
                if not more:
                    break
                data += more
            self.position.at = at + len(data)
            return data

    class Wrapper(ArrowFSWrapper):
        def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
            if mode != "rb":
                return super()._open(path, mode, **kwargs)
            return PositionalReads(self, fs.open_input_file(path), path, mode)

    return Wrapper(fs)


def spark_s3a_conf() -> dict[str, str]:
    """The same store for Spark's hadoop-aws: ``spark.hadoop.fs.s3a.*`` from the AWS variables."""
    conf = {
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.endpoint.region": region(),
    }
    if url := endpoint():
        parsed = urlparse(url if "://" in url else f"https://{url}")
        conf |= {
            "spark.hadoop.fs.s3a.endpoint": url,
            "spark.hadoop.fs.s3a.path.style.access": "true",  # S3-compatible servers
            "spark.hadoop.fs.s3a.connection.ssl.enabled": str(parsed.scheme == "https").lower(),
            # s3proxy 2.6.0 answers the SDK 2.35 bulk DeleteObjects with 501: one DELETE each.
            "spark.hadoop.fs.s3a.multiobjectdelete.enable": "false",
        }
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        conf["spark.hadoop.fs.s3a.access.key"] = os.environ["AWS_ACCESS_KEY_ID"]
        conf["spark.hadoop.fs.s3a.secret.key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    return conf


def s3a(location: str) -> str:
    """``s3://b/k`` as hadoop-aws names it (``s3a://b/k``); local paths unchanged."""
    return "s3a://" + location[len(S3) :] if is_s3(location) else location
