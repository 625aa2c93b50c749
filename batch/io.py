"""Input, output and the job folder: what makes a run resumable and exactly-once.

Input (JSONL or Parquet, a local path or any URI pyarrow's filesystems open) is cut
into chunks of `chunk_rows` rows in input order. Chunk i's results are written as
`part-<i>.parquet` (and its failed rows as `dead-letter/part-<i>.parquet`) by writing a
temporary file and renaming it: a part is there completely or not at all. A run with an
existing job id skips the chunks whose part exists, so each row is written exactly once
however often the job is killed and restarted.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

OUTPUT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("label", pa.string()),
        ("score", pa.float32()),
        ("model", pa.string()),
        ("job_id", pa.string()),
    ]
)
DEAD_LETTER_SCHEMA = pa.schema(
    [("id", pa.string()), ("reason", pa.string()), ("row", pa.string()), ("job_id", pa.string())]
)


def read_input(uri: str) -> pa.Table:
    """The whole input table; clear errors for a missing, empty or malformed input."""
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, ValueError):
        filesystem, path = pafs.LocalFileSystem(), str(Path(uri).resolve())
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise ValueError(f"input '{uri}' does not exist")
    try:
        if path.endswith(".parquet") or info.type == pafs.FileType.Directory:
            table = pq.read_table(path, filesystem=filesystem)
        elif path.endswith((".jsonl", ".json", ".ndjson")):
            with filesystem.open_input_stream(path) as stream:
                if info.size == 0:
                    raise ValueError(f"input '{uri}' is empty")
                table = pajson.read_json(stream)
        else:
            raise ValueError(f"input '{uri}': expected .jsonl or .parquet")
    except pa.ArrowInvalid as exc:
        raise ValueError(f"input '{uri}' is malformed: {exc}") from None
    if table.num_rows == 0:
        raise ValueError(f"input '{uri}' has no rows")
    return table


def input_digest(table: pa.Table) -> str:
    """Fingerprint of the input, so a job id is never resumed on different data."""
    digest = hashlib.sha256()
    digest.update(str(table.schema).encode())
    digest.update(str(table.num_rows).encode())
    for batch in table.slice(0, 1000).to_batches():
        for column in batch.columns:
            for buffer in column.buffers():
                if buffer is not None:
                    digest.update(buffer)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class JobFolder:
    root: Path  # <output>/<job_id>

    def part(self, chunk: int) -> Path:
        return self.root / f"part-{chunk:06d}.parquet"

    def dead_letter(self, chunk: int) -> Path:
        return self.root / "dead-letter" / f"part-{chunk:06d}.parquet"

    def done(self, chunk: int) -> bool:
        return self.part(chunk).exists()

    def start(self, manifest: dict[str, Any]) -> None:
        """Create the folder, or check that an existing one is this same job."""
        path = self.root / "_job.json"
        if path.exists():
            previous = json.loads(path.read_text())
            if previous != manifest:
                raise ValueError(
                    f"job '{self.root.name}' was started with a different input or config "
                    f"({path}); use a new job id"
                )
            return
        (self.root / "dead-letter").mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(manifest, indent=2).encode())

    def write_chunk(self, chunk: int, rows: pa.Table, failed: pa.Table) -> None:
        """The dead letters first: once the part exists, the chunk is done."""
        atomic_write_table(self.dead_letter(chunk), failed)
        atomic_write_table(self.part(chunk), rows)

    def progress(self, record: dict[str, Any]) -> None:
        atomic_write_bytes(self.root / "_progress.json", json.dumps(record).encode())


def atomic_write_table(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
