"""``python -m clipscale.train``: one training process (see clipscale.train.entry)."""

import traceback

from clipscale import stopping
from clipscale.logs import exit_now
from clipscale.train.entry import main

if __name__ == "__main__":
    try:
        status = main()
    except SystemExit as e:  # argparse's
        status = e.code if isinstance(e.code, int) else 1
    except BaseException:  # unforeseen: its traceback, then the same exit (Python's own waited
        traceback.print_exc()  # forever for the data workers, which ignore SIGTERM)
        status = 1
    stopping.end_data_workers()  # any left by an error (none after a run that ended well)
    exit_now(status)  # what the run wrote is closed: skip tearing down torch (about 2 s)
