"""Independent numpy reference for tst_prefetch_estimator: the loss of a learned expert estimator and
its gradient, derived by hand (no autograd), in float64.

Input (JSON file, argv[1]): kind ("linear" | "mlp"), features [N][H], targets [N][k], num_experts,
params {feature_mean, feature_std, weight, bias | hidden_weight, hidden_bias, output_weight, output_bias}.
Output (stdout, JSON): loss and gradients {name: nested lists}.

Model: z = (x - mean) / std; linear: s = z W^T + b; mlp: a = z W1^T + b1, h = relu(a), s = h W2^T + b2.
Loss: (1/N) sum_n sum_e [log(1 + exp(s_ne)) - y_ne s_ne], y the multi-hot of the targets (a repeated id
counts once). dL/ds = (sigmoid(s) - y) / N.
"""
import json
import sys

import numpy as np


def main():
    with open(sys.argv[1]) as f:
        data = json.load(f)
    x = np.asarray(data["features"], dtype=np.float64)
    ids = np.asarray(data["targets"], dtype=np.int64)
    num_experts = int(data["num_experts"])
    p = {k: np.asarray(v, dtype=np.float64) for k, v in data["params"].items()}
    n = x.shape[0]
    y = np.zeros((n, num_experts))
    for row in range(n):
        y[row, ids[row]] = 1.0
    z = (x - p["feature_mean"]) / p["feature_std"]
    grads = {}
    if data["kind"] == "linear":
        s = z @ p["weight"].T + p["bias"]
    else:
        a = z @ p["hidden_weight"].T + p["hidden_bias"]
        h = np.maximum(a, 0.0)
        s = h @ p["output_weight"].T + p["output_bias"]
    # softplus(s) - y s, stable: max(s, 0) + log1p(exp(-|s|)).
    loss = np.sum(np.maximum(s, 0.0) + np.log1p(np.exp(-np.abs(s))) - y * s) / n
    ds = (1.0 / (1.0 + np.exp(-s)) - y) / n
    if data["kind"] == "linear":
        grads["weight"] = ds.T @ z
        grads["bias"] = ds.sum(axis=0)
    else:
        grads["output_weight"] = ds.T @ h
        grads["output_bias"] = ds.sum(axis=0)
        da = (ds @ p["output_weight"]) * (a > 0.0)
        grads["hidden_weight"] = da.T @ z
        grads["hidden_bias"] = da.sum(axis=0)
    json.dump({"loss": float(loss), "gradients": {k: v.tolist() for k, v in grads.items()}}, sys.stdout)


if __name__ == "__main__":
    main()
