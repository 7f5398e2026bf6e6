"""cnncli: train, evaluate, run and explain CNNs on images, sound and text."""

__version__ = "0.1.0"
