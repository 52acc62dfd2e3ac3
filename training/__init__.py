"""Training: a point-in-time-correct training set, a scikit-learn pipeline, a manifest."""
