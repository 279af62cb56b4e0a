import os
import sys

# One intra-op thread per test process (and per subprocess a test starts): the models are tiny, and OpenMP threads
# slow to a crawl when another process (a second pytest-xdist worker) holds a core.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

# `reference_impl` and other test helpers live beside the tests.
sys.path.insert(0, os.path.dirname(__file__))


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny float64 pipeline saved with `save_pretrained`, and its outputs (the loading tests' reference)."""
    from test_loading import run

    from normalcrafter_pipeline.testing_utils import tiny_pipeline

    pipe = tiny_pipeline(seed=0).to(dtype=torch.float64)
    folder = tmp_path_factory.mktemp("saved") / "normalcrafter"
    pipe.save_pretrained(folder)
    return folder, run(pipe)
