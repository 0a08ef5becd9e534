"""stagewise library: plain Python used by the DVC stages (no Hydra, no CLI)."""
