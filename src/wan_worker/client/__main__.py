"""`python -m wan_worker.client`: the same as the `wan-video` console script."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
