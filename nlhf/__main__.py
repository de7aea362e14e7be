"""``python -m nlhf``: the pipeline's command line, :mod:`nlhf.pipeline.cli`."""
import sys

from nlhf.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
