"""Audio in: PCM chunks and files, resampling, and the log-mel front end with its compiled loops.

No module here re-exports another: importing :mod:`soundsentry.audio.pcm` (ingest) must not load
librosa and numba with the front end.
"""
