"""The audit's pure core: the hash chain, checkpoint signatures, read-model rows."""
