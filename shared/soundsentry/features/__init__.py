"""Feature windows: profiles, the streaming featurizer for many sensors, and the slab rows its
compiled loops use."""
