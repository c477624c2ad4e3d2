"""Builders for the hostile-input tests: small valid inputs to spoil, hostile files made at run time
(PNG and zip bombs, corrupt archives, FIFOs, symbolic link loops), a fixture database, and a snapshot of a
folder to prove that nothing was written."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import stat
import struct
import tempfile
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

import optuna
from PIL import Image

from harness.store import Store

BASE_STUDY = """name: hostile
dataset: {name: shapes, resolution: 16, num_images: 64}
model: {name: uvit, preset: tiny}
train: {steps: 2, batch_size: 4, warmup_steps: 1, device: cpu}
eval: {num_samples: 4, batch_size: 4, grid_size: 4, metrics: [swd], sampler: {name: ddim, steps: 2}}
"""
FIXTURE_STUDY = "fixture"


def png_bytes(size: tuple[int, int] = (20, 20), colour: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (colour, 128, 255 - colour)).save(buf, "PNG")
    return buf.getvalue()


def image_folder(path: Path, n: int, size: tuple[int, int] = (20, 20)) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (path / f"{i:03d}.png").write_bytes(png_bytes(size, 40 * i % 256))
    return path


def image_zip(path: Path, n: int) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            zf.writestr(f"img/{i:03d}.png", png_bytes(colour=40 * i % 256))
    return path


def corrupt_zip(path: Path) -> Path:
    """A zip whose directory is intact but whose first member's bytes are not (a CRC error on reading)."""
    data = bytearray(image_zip(path, 3).read_bytes())
    at = data.find(b"IDAT")
    data[at + 8 : at + 24] = b"\xff" * 16
    path.write_bytes(bytes(data))
    return path


def truncated_zip(path: Path) -> Path:
    data = image_zip(path, 3).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def zip_bomb(path: Path, size: int = 64 << 20) -> Path:
    """One "image" member of ``size`` zero bytes: about 1000 times smaller compressed."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("bomb/a.png", "w", force_zip64=True) as member:
            chunk = bytes(1 << 20)
            for _ in range(size >> 20):
                member.write(chunk)
        zf.writestr("bomb/b.png", png_bytes())
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_pixel_bomb(path: Path, side: int = 100_000) -> Path:
    """A PNG of a few bytes whose header claims ``side`` x ``side`` pixels (30 GB decoded)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


def fixture_database(path: Path, schema_version: int | None = None) -> str:
    """A SQLite database shaped like a study's: Optuna's tables and the harness's with one study of two
    trials (one parameter value that a spreadsheet would run as a formula, one error text holding a
    terminal escape sequence). Returns its URL."""
    path.write_bytes(_fixture_bytes())
    if schema_version is not None:
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE harness_schema SET version = ?", (schema_version,))
        conn.close()
    return f"sqlite:///{path}"


@lru_cache(maxsize=1)
def _fixture_bytes() -> bytes:
    """Built once per test process (creating Optuna's tables takes most of a second), then copied."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/h.db"
        store = Store(url)
        store.ensure_schema()
        store.record_study(FIXTURE_STUDY, "f.yaml", {"name": FIXTURE_STUDY}, {"sampler": "grid"}, [{"metric": "swd"}])
        optuna.create_study(study_name=FIXTURE_STUDY, storage=url)
        env = {"host": "box", "device": "cpu"}
        rows = [('=HYPERLINK("http://x")', None), ("-0.5", "bad \x1b[2J\x1b]0;pwned\x07")]
        for number, (label, error) in enumerate(rows):
            store.start_trial(FIXTURE_STUDY, number, {"diffusion.loss": label}, {"name": FIXTURE_STUDY}, env)
            store.add_metrics(FIXTURE_STUDY, number, [{"name": "swd", "value": -0.25 * (number + 1)}])
            store.finish_trial(FIXTURE_STUDY, number, "complete" if error is None else "failed", error, 1.0)
        store.engine.dispose()
        return Path(tmp, "h.db").read_bytes()


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry below ``folder`` (links not followed): its type, and a regular file's sha256."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode):
                out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[str(path.relative_to(folder))] = stat.filemode(mode)
    return out
