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
    info = json.loads(run.read_text())
    print(
        f"MLflow run {info['run_id']}: `mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`, "
        f"then open http://127.0.0.1:5000/{info.get('ui_route', '')}"
    )
