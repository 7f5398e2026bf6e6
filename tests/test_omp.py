"""The OpenMP wait policy cnncli picks before torch loads (cnncli.runtime.omp)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

from cnncli.runtime.omp import choose_wait_policy, wait_policy


@pytest.mark.parametrize("load, expected", [(0.0, None), (0.49, None), (0.5, "PASSIVE"), (3.2, "PASSIVE"),
                                            (None, "PASSIVE")])
def test_threads_spin_only_on_an_idle_machine(load, expected):
    assert wait_policy({}, load) == expected


def test_a_policy_the_user_chose_is_left_alone():
    environment = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert wait_policy(environment, 5.0) is None
    choose_wait_policy(environment)
    assert environment == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_the_command_line_sets_the_policy_before_torch_is_imported():
    """What cnncli's entry point leaves in the environment torch reads at import, and that it
    has not imported torch by then (the policy would come too late)."""
    code = ("import os, sys, cnncli.cli.app as cli; cli.app = lambda: None; os.environ['OMP_WAIT_POLICY'] = 'ACTIVE'; "
            "cli.main(); print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.split() == ["ACTIVE", "False"]
