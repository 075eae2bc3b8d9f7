"""Models: ONNX files with their cards, scored in batches, and the event trackers of their
labels."""
