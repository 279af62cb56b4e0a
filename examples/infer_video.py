#!/usr/bin/env python
"""The `normalcrafter` command (normalcrafter_pipeline/cli.py) as a script: `python examples/infer_video.py --help`.

It also runs under `accelerate launch examples/infer_video.py ...`."""

import sys

from normalcrafter_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
