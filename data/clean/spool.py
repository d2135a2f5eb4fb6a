"""Worker results travel to the main process as files in RAM, not through the pool's pipe.

Receiving through ``multiprocessing``'s result pipe cost the main process about 4 ms of CPU
per MB (its result thread reads 64 KB chunks into freshly allocated buffers); a batch of 2,000
short reviews comes back as about 1.6 MB (mostly MinHash signatures), so that alone was 3-5 us
per document, as much as dedup. A worker instead writes its pickled result into a directory of
this run on ``/dev/shm`` and returns the file name; the main process maps the file, so its
numpy arrays are not even copied, and deletes it (about 0.2 ms per batch in all). The directory is removed when the run ends; one
left by a killed run is removed by the next run once its process is gone.
"""

from __future__ import annotations

import itertools
import mmap
import os
import pickle
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

_PREFIX = "koneox-clean-"
_ALIGN = 64
_worker_dir: Path | None = None
_names = itertools.count()


def _ram() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def create() -> Path:
    """A fresh spool directory for this run (after removing those of runs that are gone)."""
    root = Path(_ram() or tempfile.gettempdir())
    for old in root.glob(f"{_PREFIX}*"):
        pid = old.name[len(_PREFIX) :].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=root))


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def use(directory: Path) -> None:
    """In a worker process: where ``put`` writes."""
    global _worker_dir
    _worker_dir = directory


def put(obj: Any, raw: bool = False) -> str:
    """In a worker: write ``obj`` (or ``raw`` bytes as they are) and return its file name.

    Layout: header size, number of buffers, their sizes (uint64 each), the pickle (protocol 5)
    and then its out-of-band buffers (the numpy arrays), each at a 64-byte boundary, so the main
    process maps the file and gets arrays that point into it instead of copies.
    """
    assert _worker_dir is not None
    path = _worker_dir / f"{os.getpid()}-{next(_names)}"
    with open(path, "wb") as f:
        if raw:
            f.write(obj)
            return str(path)
        buffers: list[pickle.PickleBuffer] = []
        header = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        raws = [b.raw() for b in buffers]
        f.write(struct.pack(f"<{2 + len(raws)}Q", len(header), len(raws), *(r.nbytes for r in raws)))
        f.write(header)
        for r in raws:
            f.write(b"\0" * (-f.tell() % _ALIGN))
            f.write(r)
    return str(path)


def take(name: str, raw: bool = False) -> Any:
    """In the main process: read (map) and delete what ``put`` wrote (``raw``: the bytes)."""
    with open(name, "rb") as f:
        if raw:
            data = f.read()
        else:
            view = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    os.unlink(name)
    if raw:
        return data
    header_size, count = struct.unpack_from("<2Q", view)
    sizes = struct.unpack_from(f"<{count}Q", view, 16)
    offset = 16 + 8 * count
    header = view[offset : offset + header_size]
    offset += header_size
    buffers = []
    for size in sizes:
        offset += -offset % _ALIGN
        buffers.append(view[offset : offset + size])
        offset += size
    return pickle.loads(header, buffers=buffers)
