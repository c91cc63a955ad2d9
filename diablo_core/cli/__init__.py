"""The typer/rich command line (``python -m diablo_core``), kept out of the library's import path."""
