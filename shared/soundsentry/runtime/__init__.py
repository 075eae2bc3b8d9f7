"""Kafka and Faust glue shared by the services: settings, topics and their Faust codec, the batch
consumer loop and the Faust app, dead letters, record batches, metrics.

Stage logic never imports this package (an import-linter contract checks it). Only
``faust_topics``, ``faust_transport`` and ``streaming`` import Faust, so the services that do not
run a Faust app (ingest, featurizer, classifier) never load it.
"""
