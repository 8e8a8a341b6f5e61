"""`python -m corpusmill ...` is the `corpusmill` command."""

from corpusmill.flows.cli import app

app()
