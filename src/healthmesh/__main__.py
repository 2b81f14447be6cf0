"""``python -m healthmesh`` runs the healthmesh command."""

from healthmesh.cli import main

main()
