"""criruntime: a Kubernetes CRI v1 container runtime."""

__version__ = "0.1.0"

RUNTIME_NAME = "criruntime"
# The CRI API version this runtime speaks, as reported in VersionResponse.
RUNTIME_API_VERSION = "v1"
