"""Hub tooling: the model card, checks of a saved folder, and conversion of the authors' checkpoints."""
