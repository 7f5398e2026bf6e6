"""Training: the engine (step, epoch, evaluation, fit), optimisers and schedules, data encoded for
training, augment: auto, the learning-rate finder, and `train` itself (recipe -> bundle)."""
