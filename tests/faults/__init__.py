"""Fault injection: what happens when processes are killed, disks fill up, stores are down or
corrupt, runs collide or the project moves.

Where each fault of issue 12 (reliability) is covered:

- A stage killed (SIGKILL or SIGTERM of the whole process group, at a seeded random point of
  each of the seven stages): the next `dvc repro` completes, every output is valid, no MLflow
  run stays RUNNING, no temporary file is left: test_killed_stages.py. DVC removes the stale
  rwlock entries of a killed `dvc repro` itself, with a WARNING naming the dead process.
- A training killed with SIGKILL leaves its MLflow run RUNNING; the next training ends it
  KILLED (through its checkpoint, or because its process no longer holds the run's lock),
  unless it resumes it: test_killed_run.py. Ctrl-C and SIGTERM of a training and of a sweep,
  and resuming a killed training bit-identically: tests/e2e/test_interrupts.py.
- A full disk during a checkpoint write: the previous checkpoint is intact, one error line
  names the file, no temporary file is left, the run ends FAILED: test_full_disk.py (on a
  real small tmpfs; skipped where mounting one is not allowed). Atomic writes themselves:
  tests/test_io.py.
- A tracking store that is down or unusable: test_tracking_store.py.
- Two `dvc exp run` in one workspace: test_concurrent_experiments.py, test_params_guard.py.
- A project moved with `mv`: test_moved_project.py.
- Malformed HTTP requests against a real model server: tests/test_serving.py.
- Bad image files and bad tables at ingest: tests/test_ingest_sources.py; bad input to any
  stage: tests/test_stage_errors.py.
- Concurrent writers of the holdout ledger: tests/test_holdout.py.
"""
