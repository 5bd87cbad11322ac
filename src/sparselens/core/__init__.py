"""The bottom layer: helpers every other layer may use and that depend on nothing in sparselens.

`atomic` (crash-safe writes and checksums), `dtypes` (dtype names), `paths` (the user cache
directory). Nothing here imports another sparselens package (import-linter checks it, see
``.importlinter``), so a low layer (data, dictionaries) never pulls in the model loader or
the checkpoint formats just to parse ``"bf16"`` or write a file.
"""
