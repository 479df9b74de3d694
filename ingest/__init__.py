"""Read house notes, validate them, chunk, embed and write them to the store incrementally (`python -m ingest`)."""
