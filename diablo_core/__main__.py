"""``python -m diablo_core``: the command line."""

from diablo_core.cli.main import app

if __name__ == "__main__":
    app()
