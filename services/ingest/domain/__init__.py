"""Ingest's pure core: mapping FHIR and SDTM to contract events, and who may write what."""
