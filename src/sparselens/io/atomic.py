"""Atomic writes and checksums, re-exported for the layers above io (the code lives in
`sparselens.core.atomic`, low enough for the data layer to use it too)."""

from sparselens.core.atomic import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json,
    sha256_file,
)

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "read_json", "sha256_file"]
