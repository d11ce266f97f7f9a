"""The Python API against the `infl` command on the bundled Captum example, zero-copy
inputs, and refusals of bad input (clear messages, the CLI's where both refuse)."""

import resource
import threading

import numpy as np
import pytest

import infl
from conftest import FACTORS, RUN, cli, read_safetensors

CKPTS = ["checkpoint-1", "checkpoint-2", "checkpoint-10"]


def arrays():
    """The fixture run as arrays: checkpoints (weight, bias, lr) and features/labels."""
    ckpts, train_x, test_x = [], [], []
    for c in CKPTS:
        t, meta = read_safetensors(RUN / f"{c}.safetensors")
        bias = t.get("fc3.bias")
        ckpts.append((np.ascontiguousarray(t["fc3.weight"], dtype=np.float32),
                      None if bias is None else np.array(bias, dtype=np.float32),
                      float(meta["learning_rate"])))
        tr, _ = read_safetensors(RUN / f"{c}.train.safetensors")
        te, _ = read_safetensors(RUN / f"{c}.test.safetensors")
        train_x.append(np.array(tr["features"], dtype=np.float32))
        test_x.append(np.array(te["features"], dtype=np.float32))
    return ckpts, train_x, tr["labels"], test_x, te["labels"]


def test_topk_equals_the_cli(tmp_path):
    out, js = tmp_path / "topk.safetensors", tmp_path / "topk.json"
    code, err = cli("topk", "--run", RUN, "--layer", "fc3", "-k", "5", "-o", out)
    assert code == 0, err
    want, _ = read_safetensors(out)
    got = infl.topk(RUN, 5, layer="fc3")
    for name in ["proponents", "proponent_ids", "proponent_scores", "opponents",
                 "opponent_ids", "opponent_scores", "test_ids"]:
        np.testing.assert_array_equal(getattr(got, name), want[name], err_msg=name)
    assert got.k == 5 and got.rows == (0, 40)


def test_scores_and_self_influence_equal_the_cli(tmp_path):
    out = tmp_path / "scores.safetensors"
    assert cli("scores", "--run", RUN, "--layer", "fc3", "-o", out)[0] == 0
    want, _ = read_safetensors(out)
    np.testing.assert_array_equal(infl.scores(RUN, layer="fc3"), want["scores"])
    assert cli("self-influence", "--run", RUN, "--layer", "fc3", "--out-dir", tmp_path)[0] == 0
    want, _ = read_safetensors(tmp_path / "self_influence.safetensors")
    np.testing.assert_array_equal(infl.self_influence(RUN, layer="fc3"), want["self_influence"])


def test_factor_runs_equal_the_cli(tmp_path):
    out = tmp_path / "topk.safetensors"
    code, err = cli("topk", "--method", "tracincp", "--factors", FACTORS, "-k", "3", "-o", out)
    assert code == 0, err
    want, _ = read_safetensors(out)
    got = infl.topk(FACTORS, 3, method="tracincp")
    np.testing.assert_array_equal(got.proponents, want["proponents"])
    np.testing.assert_array_equal(got.opponent_scores, want["opponent_scores"])


@pytest.mark.parametrize("source,py,flags", [
    # the final layer's exact Hessian; CG with the heuristic damping; Captum's convention
    ("run", {}, []),
    ("run", {"solver": "cg", "damping": "heuristic"}, ["--solver", "cg", "--damping", "heuristic"]),
    ("run", {"convention": "captum", "damping": 1e-3},
     ["--convention", "captum", "--damping", "0.001"]),
    # factor files: EK-FAC by default, CG on the empirical Fisher
    ("factors", {"damping": "heuristic"}, ["--damping", "heuristic"]),
    ("factors", {"curvature": "fisher", "damping": 0.01}, ["--curvature", "fisher", "--damping", "0.01"]),
])
def test_influence_functions_equal_the_cli(tmp_path, source, py, flags):
    where = {"run": ["--run", RUN, "--layer", "fc3"], "factors": ["--factors", FACTORS]}[source]
    out = tmp_path / "topk.safetensors"
    code, err = cli("topk", "--method", "influence", *where, *flags, "-k", "4", "-o", out)
    assert code == 0, err
    want, _ = read_safetensors(out)
    on = {"run": {"layer": "fc3"}, "factors": {}}[source]
    got = infl.topk(RUN if source == "run" else FACTORS, 4, method="influence", **on, **py)
    for name in ["proponents", "proponent_scores", "opponents", "opponent_scores"]:
        np.testing.assert_array_equal(getattr(got, name), want[name], err_msg=name)


def test_influence_settings_are_checked():
    for kw, needle in [({"solver": "newton"}, "expected one of exact, cg, lissa"),
                       ({"damping": -1.0}, "damping: expected a finite number"),
                       ({"damping": "lots"}, "damping: expected a finite number"),
                       ({"convention": "trak"}, "expected \"kronfluence\" or \"captum\""),
                       ({"curvature": "hessian2"}, "expected one of fisher, true-fisher")]:
        with pytest.raises(infl.InflError, match=needle):
            infl.topk(RUN, 3, layer="fc3", method="influence", **kw)
    with pytest.raises(infl.InflError, match="settings of method=\"influence\""):
        infl.topk(RUN, 3, layer="fc3", solver="cg")


def test_arrays_in_memory_equal_the_run_on_disk_and_captum():
    ckpts, train_x, train_y, test_x, test_y = arrays()
    s = infl.tracin_fast(ckpts, train_x, train_y, test_x, test_y)
    np.testing.assert_array_equal(s, infl.scores(RUN, layer="fc3"))
    captum, _ = read_safetensors(RUN.parent / "expected_ce_sum.safetensors")
    want = captum["scores"]
    np.testing.assert_allclose(s, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    idx, sc = infl.tracin_fast(ckpts, train_x, train_y, test_x, test_y, k=5)
    top = infl.topk(RUN, 5, layer="fc3")
    np.testing.assert_array_equal(idx, top.proponents)
    np.testing.assert_array_equal(sc, top.proponent_scores)
    idx, _ = infl.tracin_fast(ckpts, train_x, train_y, test_x, test_y, k=5, proponents=False)
    np.testing.assert_array_equal(idx, top.opponents)
    si = infl.tracin_fast(ckpts, train_x, train_y)
    np.testing.assert_array_equal(si, infl.self_influence(RUN, layer="fc3"))


def test_read_only_arrays_are_accepted_and_left_unchanged():
    ckpts, train_x, train_y, test_x, test_y = arrays()
    for x in train_x + test_x:
        x.setflags(write=False)
    before = [x.copy() for x in train_x]
    s = infl.tracin_fast(ckpts, train_x, train_y, test_x, test_y)
    assert s.shape == (7, 40)
    for a, b in zip(before, train_x):
        np.testing.assert_array_equal(a, b)


def test_inputs_are_borrowed_not_copied():
    # 60,000 x 1,000 float32 features (240 MB): a copy would raise the peak resident set by
    # at least that much; the scores' own memory (gradients [N, 3], self-influence [N]) is
    # under 2 MB.
    n, d, k = 60_000, 1_000, 3
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    y = rng.integers(0, k, n)
    w = rng.standard_normal((k, d), dtype=np.float32) * 0.01
    x.sum()  # touch every page
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    si = infl.tracin_fast([(w, None, 0.1)], x, y)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert si.shape == (n,)
    assert grown < 100e6, f"peak memory grew by {grown / 1e6:.0f} MB for a 240 MB input"


def test_the_gil_is_released_while_rust_computes():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20_000, 256), dtype=np.float32)
    y = rng.integers(0, 10, 20_000)
    w = rng.standard_normal((10, 256), dtype=np.float32)
    done, ticks = threading.Event(), [0]

    def work():
        for _ in range(3):
            infl.tracin_fast([(w, None, 1.0)], x, y, x[:2000].copy(), y[:2000], k=5)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks[0] += 1
    t.join()
    # With the GIL held for the whole computation the loop could only run between calls.
    assert ticks[0] > 10_000, ticks[0]


class Tensor:
    """Stands for an array type that is not numpy's (a torch tensor)."""


@pytest.mark.parametrize("bad, needles", [
    (lambda x: x.astype(np.float64), ["train_features", "float32", "float64"]),
    (lambda x: x[:, ::2], ["train_features", "non-contiguous", "np.ascontiguousarray"]),
    (lambda x: np.asfortranarray(x), ["train_features", "non-contiguous"]),
    (lambda x: x[0], ["train_features", "[N, D]"]),
    (lambda x: Tensor(), ["train_features", "expected a numpy array", "tensor.numpy()"]),
    (lambda x: list(x), ["train_features", "one per checkpoint (3)", "a list of 40"]),
])
def test_bad_arrays_are_refused_with_a_clear_message(bad, needles):
    ckpts, train_x, train_y, test_x, test_y = arrays()
    with pytest.raises(infl.InflError) as e:
        infl.tracin_fast(ckpts, bad(train_x[0]), train_y, test_x, test_y)
    for n in needles:
        assert n in str(e.value), str(e.value)


def test_bad_labels_and_shapes_are_refused():
    ckpts, train_x, train_y, test_x, test_y = arrays()
    with pytest.raises(infl.InflError, match="train_labels: expected a 1-D integer array"):
        infl.tracin_fast(ckpts, train_x, train_y.astype(np.float32), test_x, test_y)
    with pytest.raises(infl.InflError, match="give both or neither"):
        infl.tracin_fast(ckpts, train_x, train_y, test_x, None)
    with pytest.raises(infl.InflError, match=r"train_labels: expected 40 labels \(one per row"):
        infl.tracin_fast(ckpts, train_x, train_y[:-1], test_x, test_y)
    wide = [(np.zeros((4, 9), np.float32), None, 0.1)] * 3
    with pytest.raises(infl.InflError):
        infl.tracin_fast(wide, train_x, train_y, test_x, test_y)


def test_errors_carry_the_cli_message(tmp_path):
    missing = tmp_path / "no-such-run"
    code, err = cli("topk", "--run", missing, "--layer", "fc3", "-o", tmp_path / "t.safetensors")
    assert code != 0
    with pytest.raises(infl.InflError) as e:
        infl.topk(missing, 5, layer="fc3")
    assert err.strip().splitlines()[0] == f"error: {e.value}"
    code, err = cli("topk", "--run", RUN, "--layer", "fc9", "-o", tmp_path / "t.safetensors")
    with pytest.raises(infl.InflError) as e:
        infl.topk(RUN, 5, layer="fc9")
    assert err.strip().splitlines()[0] == f"error: {e.value}"


def test_shards_merge_to_the_whole_run_in_any_order():
    whole = infl.topk(RUN, 4, layer="fc3")
    for n in [1, 3, 7, 40]:
        parts = [infl.topk(RUN, 4, layer="fc3", shard=(i, n)) for i in range(1, n + 1)]
        assert parts[0].rows == infl.shard_rows(1, n, 40)
        parts.reverse()
        merged = infl.merge_topk(parts)
        # A tree of merges gives the same lists.
        tree = infl.merge_topk([infl.merge_topk(parts[: n // 2]) if n > 1 else parts[0],
                                *([infl.merge_topk(parts[n // 2:])] if n > 1 else [])])
        for m in [merged, tree]:
            for name in ["proponents", "proponent_ids", "proponent_scores", "opponents",
                         "opponent_scores"]:
                np.testing.assert_array_equal(getattr(m, name), getattr(whole, name))
    s = np.concatenate([infl.scores(RUN, layer="fc3", shard=(i, 3)) for i in (1, 2, 3)], axis=1)
    np.testing.assert_array_equal(s, infl.scores(RUN, layer="fc3"))


def test_a_saved_kfac_fit_equals_the_cli_and_scores_shards(tmp_path):
    # `infl fit --factors` once; hessian= reuses it as --hessian does, shards included.
    fit = tmp_path / "fit.safetensors"
    code, err = cli("fit", "--method", "influence", "--factors", FACTORS, "-o", fit)
    assert code == 0, err
    out = tmp_path / "topk.safetensors"
    code, err = cli("topk", "--method", "influence", "--factors", FACTORS, "--hessian", fit,
                    "--damping", "heuristic", "-k", "4", "-o", out)
    assert code == 0, err
    want, _ = read_safetensors(out)
    on = dict(method="influence", hessian=fit, damping="heuristic")
    whole = infl.topk(FACTORS, 4, **on)
    merged = infl.merge_topk([infl.topk(FACTORS, 4, shard=(i, 3), **on) for i in (3, 1, 2)])
    for got in [whole, merged]:
        for name in ["proponents", "proponent_scores", "opponents", "opponent_scores"]:
            np.testing.assert_array_equal(getattr(got, name), want[name], err_msg=name)
    # A final layer's Hessian is refused by K-FAC, with the CLI's message.
    h = tmp_path / "h.safetensors"
    code, err = cli("fit", "--run", RUN, "--layer", "fc3", "-o", h)
    assert code == 0, err
    with pytest.raises(infl.InflError, match="infl hessian v1"):
        infl.topk(FACTORS, 4, method="influence", hessian=h)


def test_bad_shards_are_refused():
    for shard, needle in [((3, 2), "1 <= i <= N"), ((0, 2), "1 <= i <= N"),
                          ((1, 41), "at most 40 shards")]:
        with pytest.raises(infl.InflError, match=needle.replace("<", "<")):
            infl.topk(RUN, 3, layer="fc3", shard=shard)
    with pytest.raises(infl.InflError, match="whole training set"):
        infl.topk(RUN, 3, layer="fc3", method="influence", shard=(1, 2))
    a = infl.topk(RUN, 3, layer="fc3", shard=(1, 2))
    with pytest.raises(infl.InflError, match="overlapping"):
        infl.merge_topk([a, a])


def test_settings_are_checked():
    with pytest.raises(infl.InflError, match="unknown method"):
        infl.topk(RUN, 3, layer="fc3", method="magic")
    with pytest.raises(infl.InflError, match="loss"):
        infl.topk(RUN, 3, layer="fc3", loss="hinge")
    with pytest.raises(TypeError, match="unexpected settings"):
        infl.topk(RUN, 3, layer="fc3", dampening=1)
    assert "tracincp-fast" in infl.methods()
