"""What differs between the tasks (single-label, multi-label, regression), one face per layer,
so that a stage imports only its layer's face and a change reruns only what it affects:

- kinds: labels and targets (read at ingest, stratified by split, encoded for training), the
  outputs' names, the epoch metrics and the main one (no torch, no scikit-learn);
- heads: the loss, the epoch metrics and what a model's outputs mean (torch);
- reports: the metrics, top losses, tables and figures of evaluate and test-holdout.

Nothing outside pipeline/tasks branches on the task's name: it asks the task object.
"""
