"""Score normal estimators on the published benchmarks or on clips in our format (see benchmarks/EVALUATION.md).

    python benchmarks/evaluate.py --benchmark paper --root /data/dsine_eval --out results/paper
    python benchmarks/evaluate.py --model Yanrui95/NormalCrafter --data /data/scannet_clips --out results/scannet

The same as the installed `normalcrafter-evaluate` command; the code is `normalcrafter_pipeline.evaluation`.
"""

import sys

from normalcrafter_pipeline.evaluation import main

if __name__ == "__main__":
    sys.exit(main())
