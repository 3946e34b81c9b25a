import sys

from clipscale.evaluate.cli import main

sys.exit(main())
