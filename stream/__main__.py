"""``python -m stream`` runs the metarec CLI."""

from stream.cli import main

main()
