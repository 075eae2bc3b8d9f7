"""Generated protobuf code for the wire contract proto/soundsentry/v1 (do not edit by hand).

Regenerate with ``make proto``; use :mod:`soundsentry.contracts` to encode and decode.
"""
