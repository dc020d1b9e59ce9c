"""Durations of WAV, FLAC, MP4/M4A/MOV and MP3 files from their headers (standard library only).

Usage: python3 durations.py FILE [FILE ...]  > durations.csv
Prints CSV: path, format, duration_s, exact. WAV, FLAC and MP4 durations are exact; MP3 is an
estimate from the first frame's bit rate (exact only for constant bit rate). Unknown formats and
unreadable headers give an empty duration instead of a guess.
"""

from __future__ import annotations

import csv
import struct
import sys
from typing import BinaryIO

MP3_KBPS = {  # MPEG-1 layer III, MPEG-2/2.5 layer III bit-rate index tables
    3: [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
    2: [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
}


def wav_seconds(f: BinaryIO) -> float | None:
    f.seek(12)
    byte_rate, pos = 0, 12
    while chunk := f.read(8):
        if len(chunk) < 8:
            return None
        kind, size = struct.unpack("<4sI", chunk)
        if kind == b"fmt ":
            byte_rate = struct.unpack("<8x I", f.read(12))[0]  # skips format, channels, sample rate
        elif kind == b"data":
            return size / byte_rate if byte_rate else None
        pos += 8 + size + (size & 1)
        f.seek(pos)
    return None


def flac_seconds(f: BinaryIO) -> float | None:
    f.seek(8)  # "fLaC" + metadata block header of STREAMINFO
    info = f.read(34)
    if len(info) < 18:
        return None
    bits = int.from_bytes(info[10:18], "big")
    rate, samples = bits >> 44, bits & ((1 << 36) - 1)
    return samples / rate if rate else None


def mp4_seconds(f: BinaryIO) -> float | None:
    pos, end = 0, f.seek(0, 2)
    while pos + 8 <= end:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", f.read(8))[0], 16
        elif size == 0:
            size = end - pos
        if size < head:
            return None
        if kind == b"moov":
            pos, end = pos + head, pos + size
            continue
        if kind == b"mvhd":
            version = f.read(4)[0]
            f.read(16 if version == 1 else 8)  # creation and modification times
            scale, duration = struct.unpack(">IQ" if version == 1 else ">II", f.read(12 if version == 1 else 8))
            return duration / scale if scale else None
        pos += size
    return None


def mp3_seconds(f: BinaryIO, size: int) -> float | None:
    head = f.read(10)
    start = 0
    if head[:3] == b"ID3":
        start = 10 + ((head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9])
    f.seek(start)
    data = f.read(64 * 1024)
    for i in range(len(data) - 3):
        if data[i] == 0xFF and data[i + 1] & 0xE6 == 0xE2:  # frame sync, layer III
            kbps = MP3_KBPS[3 if data[i + 1] & 0x18 == 0x18 else 2][data[i + 2] >> 4 if data[i + 2] >> 4 < 15 else 0]
            return (size - start - i) * 8 / (kbps * 1000) if kbps else None
    return None


def probe(path: str) -> tuple[str, float | None, bool]:
    with open(path, "rb") as f:
        magic = f.read(12)
        size = f.seek(0, 2)
        f.seek(0)
        if magic[:4] == b"RIFF" and magic[8:12] == b"WAVE":
            return "wav", wav_seconds(f), True
        if magic[:4] == b"fLaC":
            return "flac", flac_seconds(f), True
        if magic[4:8] == b"ftyp":
            return "mp4", mp4_seconds(f), True
        if magic[:3] == b"ID3" or (magic[0] == 0xFF and magic[1] & 0xE0 == 0xE0):
            return "mp3", mp3_seconds(f, size), False
    return "unknown", None, False


def main(paths: list[str]) -> int:
    out = csv.writer(sys.stdout)
    out.writerow(["path", "format", "duration_s", "exact"])
    for path in paths:
        try:
            fmt, seconds, exact = probe(path)
        except (OSError, struct.error, IndexError) as exc:
            fmt, seconds, exact = f"error: {exc}", None, False
        out.writerow([path, fmt, "" if seconds is None else f"{seconds:.2f}", "yes" if exact else "no"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
