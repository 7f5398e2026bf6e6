"""The network and the maths on its outputs: blocks, the model (stem -> backbone -> classifier), the
layer table, batched inference, Grad-CAM, calibration, batch-norm adaptation, metrics. Knows no
recipe and no modality by name."""
