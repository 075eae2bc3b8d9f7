"""Featurizer: audio.pcm chunks become overlapping, banded log-mel windows on audio.windows."""
