"""The audit's adapters: the SQL store (Alembic-managed) and the Kafka consumer."""
