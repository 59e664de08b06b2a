"""`python -m api`: serve (see api/cli.py)."""

from api.cli import main

main()
