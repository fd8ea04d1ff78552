"""Ingest's adapters at the edge: Kafka, SQL, files."""
