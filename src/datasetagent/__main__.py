"""``python -m datasetagent``."""

from datasetagent.cli import main

if __name__ == "__main__":
    main()
