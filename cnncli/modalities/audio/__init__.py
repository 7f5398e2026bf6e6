"""Audio: recordings as time x frequency pictures (decoding, features, the feature cache)."""

from cnncli.modalities.audio.modality import AudioModality
from cnncli.modalities.audio.options import AudioAugment, AudioOptions
from cnncli.modalities.audio.stem import BandNormalize, WaveformStem

__all__ = ["AudioAugment", "AudioModality", "AudioOptions", "BandNormalize", "WaveformStem"]
