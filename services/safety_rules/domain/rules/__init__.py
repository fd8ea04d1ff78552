"""One small, versioned rule per module family; each returns the alerts it raises, nothing more."""
