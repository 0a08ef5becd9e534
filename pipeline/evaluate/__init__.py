"""Scoring a trained model: metrics (scikit-learn), plots, the holdout ledger, comparing runs."""
