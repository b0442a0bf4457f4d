"""Training: `SppSclTrainer` with the semi-push-pull update, and reductions across processes."""
