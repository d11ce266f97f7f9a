"""Export a PyTorch training run for `infl`: checkpoints + penultimate features.

Run: python examples/export_pytorch.py OUT_DIR   (needs torch and safetensors)
Then: infl self-influence --run OUT_DIR --layer fc3
"""
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

out = sys.argv[1] if len(sys.argv) > 1 else "run"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)

model = nn.Sequential()
model.add_module("fc1", nn.Linear(20, 32))
model.add_module("relu", nn.ReLU())
model.add_module("fc3", nn.Linear(32, 3))  # the final layer infl attributes through

x_train, y_train = torch.randn(500, 20), torch.randint(0, 3, (500,))
x_test, y_test = torch.randn(50, 20), torch.randint(0, 3, (50,))


def features(x):
    """Inputs of the final layer (what Captum's TracInCPFast hooks)."""
    seen = {}
    hook = model.fc3.register_forward_hook(lambda m, inp, o: seen.update(a=inp[0].detach()))
    with torch.no_grad():
        model(x)
    hook.remove()
    return seen["a"].contiguous()


def export(step, lr):
    name = f"{out}/checkpoint-{step}"
    save_file(model.state_dict(), f"{name}.safetensors", metadata={"learning_rate": str(lr)})
    model.eval()  # features as the model sees them at attribution time
    for split, x, y in [("train", x_train, y_train), ("test", x_test, y_test)]:
        ids = torch.arange(len(y), dtype=torch.int64)
        save_file({"features": features(x), "labels": y, "ids": ids}, f"{name}.{split}.safetensors")
    model.train()


loss_fn = nn.CrossEntropyLoss()
for epoch, lr in enumerate([0.1, 0.05, 0.01], start=1):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for i in range(0, len(x_train), 50):
        opt.zero_grad()
        loss_fn(model(x_train[i : i + 50]), y_train[i : i + 50]).backward()
        opt.step()
    export(epoch, lr)
print(f"wrote {out}/checkpoint-{{1,2,3}}[.train|.test].safetensors")
