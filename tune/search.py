"""Hyperparameter search for MTSAM: ``python tune/search.py --help`` (logic in ``mtsam.sweep``)."""

import sys

from mtsam.sweep.cli import main

if __name__ == "__main__":
    sys.exit(main())
