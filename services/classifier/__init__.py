"""Classifier: micro-batched ONNX scoring of audio.windows into audio.scores."""
