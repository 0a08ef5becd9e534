"""DVC stage entrypoints: `python -m stages.<name>`, each a thin Hydra wrapper over pipeline/."""
