"""Audio: recordings as time x frequency pictures (decoding, features, the feature cache)."""

from cnncli.modalities.audio.modality import AudioModality, BandNormalize
from cnncli.modalities.audio.options import AudioAugment, AudioOptions

__all__ = ["AudioAugment", "AudioModality", "AudioOptions", "BandNormalize"]
