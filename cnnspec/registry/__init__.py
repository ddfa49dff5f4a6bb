"""The plugin machinery: hook specs, the types plugins register, the registry, loading and trust."""
