"""Ingest: sensors stream PCM chunks over gRPC; each is validated and published to audio.pcm."""
