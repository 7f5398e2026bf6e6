"""Data sources: where samples come from and how they are split."""

from cnncli.data.sample import Sample

__all__ = ["Sample"]
