"""The model's life: training dataset, estimators, evaluation, training, registry."""
