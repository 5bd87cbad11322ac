"""Formats: the native checkpoint, atomic writes, and adapters for other libraries."""
