"""The ingest stage without gRPC and Kafka: who may send which chunk (rules), and the sensor side
(client)."""
