"""The served feature viewer: `sparselens serve` (see docs/viewer.md)."""

from sparselens.server.app import create_app
from sparselens.server.launch import build_app, open_stores, run_server

__all__ = ["build_app", "create_app", "open_stores", "run_server"]
