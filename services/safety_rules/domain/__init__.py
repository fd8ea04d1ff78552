"""The pure rule engine: (state, event) -> (state, alerts). No Kafka, clock or I/O in here."""
