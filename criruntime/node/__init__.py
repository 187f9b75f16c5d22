"""Node-level CRI verbs: Version, Status, RuntimeConfig, UpdateRuntimeConfig."""
