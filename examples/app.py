#!/usr/bin/env python
"""The web demo (normalcrafter_pipeline/demo.py) as a script: `python examples/app.py --help`.

pip install -e ".[demo]" && python examples/app.py     # http://127.0.0.1:7860
"""

import sys

from normalcrafter_pipeline.demo import main

if __name__ == "__main__":
    sys.exit(main())
