"""Print the headline numbers of the last pipeline run (metrics/*.json)."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

for split in ("valid", "test"):
    path = ROOT / "metrics" / f"{split}.json"
    if path.exists():
        m = json.loads(path.read_text())
        print(
            f"{split:>5} accuracy {m['accuracy']:.4f}  error_rate {m['error_rate']:.4f}  "
            f"f1_macro {m['f1_macro']:.4f}  ({m['images']} images)"
        )
run = ROOT / "models" / "run.json"
if run.exists():
    print(
        f"MLflow run {json.loads(run.read_text())['run_id']}: browse with `mlflow ui --backend-store-uri "
        f"sqlite:///mlruns/mlflow.db`"
    )
