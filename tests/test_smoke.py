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


def test_package_api_functions_survive_submodule_imports():
    # regression: a submodule named like an API function used to shadow it
    import smx_cli
    import smx_cli.core.softmax  # noqa: F401
    import smx_cli.core.xent  # noqa: F401

    np.testing.assert_allclose(smx_cli.softmax([1.0, 2.0, 3.0]),
                               [0.09003057, 0.24472847, 0.66524096], rtol=1e-7)
    for name in smx_cli.__all__:
        assert getattr(smx_cli, name) is not None
    assert callable(smx_cli.cross_entropy) and callable(smx_cli.log_softmax)
