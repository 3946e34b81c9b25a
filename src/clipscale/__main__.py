"""``python -m clipscale``: the ``clipscale`` command (clipscale.cli.main), e.g.
``python -m clipscale check-config config/config.yaml``."""
import sys

from clipscale.cli import main

if __name__ == "__main__":
    sys.exit(main())
