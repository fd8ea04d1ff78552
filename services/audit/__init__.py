"""The audit-log projection (hash-chained, signed), its read models and the DSMB API."""
