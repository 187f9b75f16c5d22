"""The CRI wire API: stubs generated from proto/ into runtime/v1 by `make proto`."""

# kubelet's CRI client sends and receives at most 16 MiB per message; the daemon uses the same
# bound both ways, and responses that carry output (ExecSync) are trimmed to fit inside it.
MAX_MESSAGE = 16 * 1024 * 1024
