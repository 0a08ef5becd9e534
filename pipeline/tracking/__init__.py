"""MLflow bookkeeping: the only package (with the packaged model's code) that imports mlflow.

store: which store and its client; runs: a run handle and the training run's life;
models: the logged and registered model; sweeps: a sweep's parent run and its children.
It imports no training, evaluation or inference code: callers hand it plain values.
"""
