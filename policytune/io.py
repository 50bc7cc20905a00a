"""Reading and writing the JSON files that connect the stages.

Writes are atomic (temp file in the same folder, fsync, rename) so a kill never leaves a
half-written file where a good one was. Append-only JSONL is the resume log of long stages:
a line cut by a kill is ignored on read, everything before it is kept.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from policytune.config import UserError


# Read once: os.umask can only be read by setting it, and setting it to 0 on every write would,
# for that instant, give files other threads create (resume logs, server temp files) mode 0666.
_UMASK = os.umask(0)
os.umask(_UMASK)


def ordinary_mode(path: str | os.PathLike) -> None:
    """Give a file the mode of any file the user creates: mkstemp (and safetensors, writing an adapter) make 0600
    files, and outputs are ordinary files the user's other accounts and tools read."""
    os.chmod(path, 0o666 & ~_UMASK)


def _publish(tmp: str, path: Path) -> None:
    ordinary_mode(tmp)
    os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text so that readers see either the old file or the complete new one."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The writer's pid ends the name: a kill leaves the file, and the next run can tell it is nobody's.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{os.getpid()}", dir=path.parent)
    except OSError as exc:  # named after the file the user asked for, not a temporary name beside it
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


# The temporary files and folders of atomic writes (`.instructionquality.json.h7e8tyl1.tmp1234`) and of deploy's
# staging (`adapter.gguf.tmp1234`) end in ".tmp" and the id of the process writing them.
TEMPORARY = re.compile(r"\.tmp(\d+)$")


def published_name(path: Path) -> Path:
    """The file a temporary name (`adapter.gguf.tmp1234`) stands for."""
    return path.with_name(TEMPORARY.sub("", path.name))


def clear_stale_temporaries(folder: str | os.PathLike, own: bool = False) -> list[Path]:
    """Remove the temporary files and folders in `folder` whose process is gone (with `own`, this process's too):
    a killed run leaves them, at the size of what it was writing, and no published file depends on them. Another
    live process's are in use and kept. Returns what was removed."""
    folder = Path(folder)
    removed = []
    for path in sorted(folder.glob("*.tmp*")) if folder.is_dir() else []:
        match = TEMPORARY.search(path.name)
        if not match:
            continue
        pid = int(match.group(1))
        if not (own if pid == os.getpid() else not process_alive(pid)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                path.unlink()
            except OSError:
                pass
        if os.path.lexists(path):
            continue  # a folder this run may only read: a stage that writes there says so when it does
        if not own:
            print(f"removed {path}: left by a run that was stopped (process {pid})", flush=True)
        removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (under any user)."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    except OverflowError:
        return False  # no process has an id that large: a file named like ours by something else
    return True


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_text(path: str | os.PathLike, what: str = "input") -> str:
    """A file's text; one in another encoding than UTF-8 is a one-line UserError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: {what} file is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def read_json(path: str | os.PathLike, what: str = "input") -> Any:
    """Read a JSON file; a missing or corrupt file is a one-line UserError naming it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} file not found (run the previous stage first?)")
    text = read_text(path, what)
    if not text.strip():
        raise UserError(f"{path}: {what} file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: {what} file is not valid JSON (truncated or corrupted? {exc.msg} at line {exc.lineno})") from None


def read_records(path: str | os.PathLike, what: str = "input", keys: dict[str, type] | None = None) -> list[dict]:
    """Read a JSON list of objects (the stages' record files), each with `keys` of their types where given: a
    hand-edited or foreign file is a one-line error naming its first bad record, not a KeyError later."""
    data = read_json(path, what)
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"{path}: {what} file must hold a JSON list of objects")
    for number, record in enumerate(data, 1):
        for key, typ in (keys or {}).items():
            if not isinstance(record.get(key), typ):
                raise UserError(f"{path}: record {number} has no {key!r} {typ.__name__}: not a {what} file "
                                "(rerun the stage that writes it?)")
    return data


def read_jsonl(path: str | os.PathLike, strict: bool = False) -> list[dict]:
    """Read JSON lines. A cut last line (a kill mid-append) is skipped unless strict."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = read_text(path, "JSON lines").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if strict or number < len(lines):
                raise UserError(f"{path}: line {number} is not valid JSON") from None
    return records


class JsonlLog:
    """Append-only JSONL resume log: each completed unit of work is one flushed line."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._handle = open(self.path, "a", encoding="utf-8")

    def _repair_tail(self) -> None:
        # A kill mid-write leaves a partial last line; drop it so the next append starts clean.
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as handle:
                handle.truncate(cut)

    def records(self) -> list[dict]:
        return read_jsonl(self.path)

    def append(self, record: dict) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "JsonlLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def content_hash(*parts: Any, length: int = 16) -> str:
    """Stable id from content: same inputs give the same id across runs and machines."""
    digest = hashlib.sha256()
    for part in parts:
        text = part if isinstance(part, str) else json.dumps(part, sort_keys=True, ensure_ascii=False)
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:length]


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def exclusive(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) across processes: two runs filling one cache entry
    wait for each other instead of replacing the folder the other is reading. No-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # Windows: one run at a time is the user's job there
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
