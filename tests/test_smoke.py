import numpy as np
from click.testing import CliRunner

from smx_cli.cli import cli
from conftest import SAMPLES


def test_seed_examples_give_tutorial_values():
    r = CliRunner().invoke(cli, ["softmax", f"{SAMPLES}/seeds.csv", "--format", "csv"])
    assert r.exit_code == 0, r.output
    got = np.loadtxt(r.stdout.splitlines(), delimiter=",")
    np.testing.assert_allclose(got[0], [0.09003057, 0.24472847, 0.66524096], rtol=1e-7)
    np.testing.assert_allclose(got[2], [0, 0, 1])
