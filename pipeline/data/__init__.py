"""Data stages: list and decode the source, store the arrays, split, normalization statistics. No torch, no mlflow."""
