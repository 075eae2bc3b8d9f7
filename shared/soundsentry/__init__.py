"""SoundSentry: detect sounds that matter in audio from many microphones.

The library holds every stage's logic as plain, Kafka-free code; the services under
``soundsentry.services`` are thin adapters over it. Nothing here connects anywhere at import time.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("soundsentry")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
