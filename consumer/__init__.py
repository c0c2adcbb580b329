"""A downstream service: reads sanitized.* as a consumer role, reacts to changes."""
