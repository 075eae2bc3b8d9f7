"""The stream services: thin adapters (Faust or gRPC, settings, metrics) over the library.

Importable as ``soundsentry.services.<name>``.
"""
