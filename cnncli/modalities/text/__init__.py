"""Text: sentences as matrices of token embeddings (tokenizer, vocabulary, subwords, vectors, saliency)."""

from cnncli.modalities.text.embedding import TokenEmbedding
from cnncli.modalities.text.modality import TEXT_EXTENSIONS, TextModality
from cnncli.modalities.text.options import TextAugment, TextOptions

__all__ = ["TEXT_EXTENSIONS", "TextAugment", "TextModality", "TextOptions", "TokenEmbedding"]
