"""Where the scoring job keeps its files: a local folder, or any Hadoop file system.

A location is a local path (``data/lake``, or a ``file:`` URI) or a URI whose scheme
Hadoop knows: ``s3a://bucket/lake``, ``hdfs://namenode/lake``, ``abfs://...``. Local
folders go through Python's file API; every other scheme through Hadoop's
``FileSystem`` in Spark's JVM, with the session's Hadoop settings (``--conf
spark.hadoop.fs.s3a.endpoint=...``; see :mod:`fraudstream.objectstore`), so the views,
the driver's state and Spark's own checkpoint all reach the same store the same way.

Files are written whole or not at all. A file is first written on local disk by the
caller (Parquet, Arrow, JSON), then moved into place:

- locally, by a rename within its folder;
- on an object store (``s3a``, ``gs``, ``abfs``...), by one upload: an object becomes
  visible only once complete;
- on another Hadoop file system (``hdfs``), by an upload under a hidden name and a rename.

Readers skip hidden names (``.x``, ``_x``) as Spark and Arrow do.
"""

from __future__ import annotations

import builtins
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from fraudstream.errors import FraudstreamError

T = TypeVar("T")

#: Hadoop file systems whose objects appear only once uploaded whole, and whose rename
#: is a copy: a file is uploaded to its name directly.
OBJECT_STORE_SCHEMES = frozenset({"s3a", "gs", "abfs", "abfss", "wasb", "wasbs", "oss", "cos"})


class StorageError(FraudstreamError):
    """A location cannot be used; the message is one sentence for the user."""


def is_uri(location: str | Path) -> bool:
    """Whether ``location`` names a Hadoop file system other than the local disk."""
    if isinstance(location, Path):
        return False
    scheme = urlsplit(str(location)).scheme
    # One letter is a Windows drive, not a scheme.
    return len(scheme) > 1 and scheme != "file"


def location(text: str | Path) -> str | Path:
    """A command-line location: a URI as given, a local path made absolute.

    For ``argparse``'s ``type=``: ``s3a://bucket/lake`` stays a string, ``data/lake``
    and ``file:///srv/lake`` become absolute ``Path`` objects.
    """
    if is_uri(text):
        return str(text).rstrip("/")
    text = str(text)
    if text.startswith("file:"):
        text = urlsplit(text).path
    return Path(text).resolve()


def hadoop_path(place: str | Path) -> str:
    """``place`` as Spark and Hadoop take it: a URI as given, a local path as ``file:``.

    Not ``Path.as_uri()``: Hadoop's ``Path`` does not decode percent escapes, so the
    ``+`` of ``/srv/lake+1`` written ``%2B`` there would name another folder.
    """
    if isinstance(place, str) and is_uri(place):
        return place
    return "file://" + Path(place).absolute().as_posix()


def join(base: str | Path, *parts: str) -> str | Path:
    """``base/parts...`` for a local path or a URI."""
    if is_uri(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return Path(base).joinpath(*parts)


def _visible(name: str) -> bool:
    return not name.startswith((".", "_"))


class LocalFiles:
    """A folder on the local disk (or a mounted one)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __str__(self) -> str:
        return str(self.root)

    def check(self) -> None:
        """Nothing to check: a local folder is made when first written to."""

    def sub(self, rel: str) -> LocalFiles:
        """The folder ``rel`` inside this one."""
        return LocalFiles(self.root / rel)

    def exists(self, rel: str = "") -> bool:
        """Whether file or folder ``rel`` exists."""
        return (self.root / rel).exists()

    def list(self, rel: str = "") -> list[str]:
        """Names in folder ``rel``, hidden ones left out; empty if it does not exist."""
        folder = self.root / rel
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if _visible(p.name))

    def any_file(self, rel: str, suffix: str) -> bool:
        """Whether any file under ``rel``, at any depth, ends in ``suffix``."""
        folder = self.root / rel
        return folder.is_dir() and any(True for _ in folder.rglob(f"*{suffix}"))

    def find(self, rel: str, suffix: str) -> builtins.list[str]:
        """Paths (relative to ``rel``) of the visible files under ``rel`` ending in ``suffix``."""
        folder = self.root / rel
        if not folder.is_dir():
            return []
        found = (p.relative_to(folder) for p in folder.rglob(f"*{suffix}") if p.is_file())
        return sorted(p.as_posix() for p in found if all(_visible(part) for part in p.parts))

    def write(self, rel: str, writer: Callable[[Path], object]) -> int:
        """Have ``writer`` write a local file, then move it to ``rel``; return its size."""
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.writing")
        writer(staging)
        size = staging.stat().st_size
        os.replace(staging, target)
        return size

    def move(self, source: str, target: str) -> None:
        """Move file ``source`` to ``target`` (replacing it) by one rename."""
        path = self.root / target
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.root / source, path)

    def read(self, rel: str, reader: Callable[[Path], T]) -> T:
        """What ``reader`` makes of the local path of file ``rel``."""
        return reader(self.root / rel)

    def modified(self, rel: str) -> float:
        """When file ``rel`` was last written, in seconds since the epoch."""
        return (self.root / rel).stat().st_mtime

    def delete(self, rel: str) -> None:
        """Delete file or folder ``rel`` with what it holds; nothing if it does not exist."""
        path = self.root / rel
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class HadoopFiles:
    """A folder on a Hadoop file system, reached through Spark's JVM."""

    def __init__(self, root: str, spark=None):
        from py4j.protocol import Py4JJavaError
        from pyspark.sql import SparkSession

        spark = spark or SparkSession.getActiveSession()
        if spark is None:
            raise StorageError(f"{root} is on a Hadoop file system, which needs a Spark session.")
        self.uri = str(root).rstrip("/")
        self._spark = spark
        self._jvm = spark._jvm
        self._hadoop = self._jvm.org.apache.hadoop.fs
        self._root = self._hadoop.Path(self.uri)
        try:
            self._fs = self._root.getFileSystem(spark._jsc.hadoopConfiguration())
        except Py4JJavaError as error:
            scheme = urlsplit(self.uri).scheme
            raise StorageError(
                f"Hadoop has no file system for {scheme}:// URIs such as {self.uri} "
                f"({error.java_exception.getMessage()})."
            ) from None
        self._direct = self._fs.getScheme() in OBJECT_STORE_SCHEMES
        self._conf = spark._jsc.hadoopConfiguration()
        self._local = self._hadoop.FileSystem.getLocal(self._conf).getRawFileSystem()

    def __str__(self) -> str:
        return self.uri

    def check(self) -> None:
        """Raise :class:`StorageError`, in one sentence, if the location cannot be reached."""
        from py4j.protocol import Py4JJavaError

        try:
            self._fs.exists(self._root)
        except Py4JJavaError as error:
            message = str(error.java_exception.getMessage()).splitlines()[0]
            raise StorageError(f"Cannot reach {self.uri}: {message}") from None

    def sub(self, rel: str) -> HadoopFiles:
        """The folder ``rel`` inside this one."""
        return HadoopFiles(f"{self.uri}/{rel}", self._spark)

    def _path(self, rel: str):
        return self._hadoop.Path(f"{self.uri}/{rel}") if rel else self._root

    def exists(self, rel: str = "") -> bool:
        """Whether file or folder ``rel`` exists."""
        return bool(self._fs.exists(self._path(rel)))

    def list(self, rel: str = "") -> list[str]:
        """Names in folder ``rel``, hidden ones left out; empty if it does not exist."""
        path = self._path(rel)
        if not self._fs.exists(path):
            return []
        names = [status.getPath().getName() for status in self._fs.listStatus(path)]
        return sorted(name for name in names if _visible(name))

    def any_file(self, rel: str, suffix: str) -> bool:
        """Whether any file under ``rel``, at any depth, ends in ``suffix``."""
        path = self._path(rel)
        if not self._fs.exists(path):
            return False
        found = self._fs.listFiles(path, True)
        while found.hasNext():
            if found.next().getPath().getName().endswith(suffix):
                return True
        return False

    def find(self, rel: str, suffix: str) -> builtins.list[str]:
        """Paths (relative to ``rel``) of the visible files under ``rel`` ending in ``suffix``."""
        path = self._path(rel)
        if not self._fs.exists(path):
            return []
        prefix = self._fs.makeQualified(path).toString().rstrip("/") + "/"
        found, names = self._fs.listFiles(path, True), []
        while found.hasNext():
            name = found.next().getPath().toString().removeprefix(prefix)
            if name.endswith(suffix) and all(_visible(part) for part in name.split("/")):
                names.append(name)
        return sorted(names)

    def write(self, rel: str, writer: Callable[[Path], object]) -> int:
        """Have ``writer`` write a local file, then copy it to ``rel``; return its size.

        On an object store the upload is the one write (an object appears only once whole);
        elsewhere the copy goes to a hidden name and is renamed.
        """
        target = self._path(rel)
        with tempfile.TemporaryDirectory(prefix="fraudstream-") as scratch:
            local = Path(scratch) / target.getName()
            writer(local)
            size = local.stat().st_size
            if self._direct:
                self._upload(local, target)
            else:
                staging = self._hadoop.Path(target.getParent(), f".{target.getName()}.writing")
                self._upload(local, staging)
                self._fs.delete(target, False)
                if not self._fs.rename(staging, target):
                    raise OSError(f"Could not rename {staging} to {target}.")
        return size

    def _upload(self, local: Path, target) -> None:
        # A stream copy through the target's own output stream: on S3A the single upload
        # on close that Spark's writers use.
        copied = self._hadoop.FileUtil.copy(
            self._local,
            self._hadoop.Path(hadoop_path(local)),
            self._fs,
            target,
            False,
            True,
            self._conf,
        )
        if not copied:
            raise OSError(f"Could not copy {local} to {target}.")

    def move(self, source: str, target: str) -> None:
        """Move file ``source`` to ``target`` (replacing it) by a rename.

        A rename is atomic on HDFS; on an object store it is a copy, whose object appears
        only once whole.
        """
        destination = self._path(target)
        self._fs.mkdirs(destination.getParent())
        self._fs.delete(destination, False)
        if not self._fs.rename(self._path(source), destination):
            raise OSError(f"Could not rename {self._path(source)} to {destination}.")

    def read(self, rel: str, reader: Callable[[Path], T]) -> T:
        """What ``reader`` makes of a local copy of file ``rel`` (deleted afterwards)."""
        source = self._path(rel)
        with tempfile.TemporaryDirectory(prefix="fraudstream-") as scratch:
            local = Path(scratch) / source.getName()
            # The raw local file system: no checksum file beside the copy.
            self._fs.copyToLocalFile(False, source, self._hadoop.Path(hadoop_path(local)), True)
            return reader(local)

    def modified(self, rel: str) -> float:
        """When file ``rel`` was last written, in seconds since the epoch."""
        return self._fs.getFileStatus(self._path(rel)).getModificationTime() / 1000

    def delete(self, rel: str) -> None:
        """Delete file or folder ``rel`` with what it holds; nothing if it does not exist."""
        self._fs.delete(self._path(rel), True)


Files = LocalFiles | HadoopFiles


def files(place: str | Path | Files, spark=None) -> Files:
    """The folder at ``place``: a local path, a Hadoop URI, or already a folder."""
    if isinstance(place, LocalFiles | HadoopFiles):
        return place
    if is_uri(place):
        return HadoopFiles(str(place), spark)
    return LocalFiles(location(place))
