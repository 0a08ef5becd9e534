"""A model and its input: architectures, weights, uint8 -> model input, inference, the packaged MLflow model. No training code."""
