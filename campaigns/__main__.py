"""`python -m campaigns` is the `wacamp` command."""

from campaigns.cli import main

main()
