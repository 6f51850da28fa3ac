"""Shared set-up: the repository root importable by the scripts the tests start, and a tiny synthetic dataset made
once per session. (pytest itself imports the project from the root: pytest.ini's ``pythonpath``.)"""
from __future__ import annotations

import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# as tools/setup_env.sh does for a user's shell: `python tools/x.py` and `python bench/x.py` find the project
if os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] != ROOT:
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))

# one thread: the machine's cores are shared by parallel test runs, and results do not depend on thread count
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> str:
    """A tiny synthetic VOC/SBD tree (12 train of which 3 VOC-train, 6 val, 3 test; 64 px wide); treat it as read-only.

    Use it as DATASET.ROOT / TEST.DATA_ROOT; lists: train_augvoc.txt, train_voc.txt, val_voc.txt, test.txt.
    Tests that modify data must copy it first.
    """
    from tools.make_synthetic import make_synthetic

    out = str(tmp_path_factory.mktemp("synthetic"))
    make_synthetic(out, n_train=12, n_val=6, n_test=3, size=64, seed=0)
    return out
