"""``python -m datasetagent``."""

from datasetagent.cli import main

main()
