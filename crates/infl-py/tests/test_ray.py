"""infl.ray on a real one-machine Ray cluster: shard tasks merged in a tree equal the
single run. Importing infl does not import Ray."""

import subprocess
import sys

import numpy as np
import pytest

import infl
from conftest import RUN


def test_import_infl_does_not_import_ray():
    code = "import infl, infl.ray, sys; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("shards", [4, 7])
def test_ray_shards_equal_the_single_run(cluster, shards):
    import infl.ray as iray

    whole = infl.topk(RUN, 5, layer="fc3")
    got = iray.topk(RUN, 5, layer="fc3", shards=shards)
    for name in ["proponents", "proponent_ids", "proponent_scores", "opponents",
                 "opponent_ids", "opponent_scores", "test_ids"]:
        np.testing.assert_array_equal(getattr(got, name), getattr(whole, name), err_msg=name)
    assert got.rows == (0, 40)


def test_ray_errors_reach_the_caller(cluster):
    import infl.ray as iray

    with pytest.raises(Exception, match="fc9"):
        iray.topk(RUN, 5, layer="fc9", shards=4)
