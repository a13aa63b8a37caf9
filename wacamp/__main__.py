"""`python -m wacamp` is the `wacamp` command."""

from wacamp.cli import main

main()
