"""infl from Python on the bundled Captum example (run from the repository root after
`pip install ./crates/infl-py safetensors`): TracInCPFast on numpy arrays equals Captum's
`TracInCPFast(...).influence(...)` (its scores are in fixtures/captum/expected_ce_sum),
and the top-k lists equal `infl topk --run fixtures/captum/run --layer fc3 -k 3`."""

import numpy as np
from safetensors.numpy import load_file
from safetensors import safe_open

import infl

run = "fixtures/captum/run"
checkpoints, train_x, test_x = [], [], []
for c in ["checkpoint-1", "checkpoint-2", "checkpoint-10"]:
    with safe_open(f"{run}/{c}.safetensors", "np") as f:
        lr = float(f.metadata()["learning_rate"])
        checkpoints.append((f.get_tensor("fc3.weight"), f.get_tensor("fc3.bias"), lr))
    train, test = load_file(f"{run}/{c}.train.safetensors"), load_file(f"{run}/{c}.test.safetensors")
    train_x.append(train["features"]); test_x.append(test["features"])

# Captum: TracInCPFast(model, model.fc3, train_set, checkpoints, loss_fn=CrossEntropyLoss(
#     reduction="sum")).influence((x_test, y_test)) -> scores [test, train]
scores = infl.tracin_fast(checkpoints, train_x, train["labels"], test_x, test["labels"])
captum = load_file("fixtures/captum/expected_ce_sum.safetensors")["scores"]
np.testing.assert_allclose(scores, captum, rtol=1e-5, atol=1e-6 * np.abs(captum).max())

# ... .influence((x_test, y_test), k=3): proponents' indices and scores, best first.
indices, top_scores = infl.tracin_fast(checkpoints, train_x, train["labels"], test_x,
                                       test["labels"], k=3)
on_disk = infl.topk(run, 3, layer="fc3")            # the run by path, as the CLI reads it
assert (indices == on_disk.proponents).all()
for q in range(len(indices)):
    print(f"test {q}: proponents {indices[q].tolist()} scores {np.round(top_scores[q], 4).tolist()}")
