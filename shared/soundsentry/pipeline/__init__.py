"""Every stage in one process, without Kafka: files (detect) and the embedded server (embedded)."""
