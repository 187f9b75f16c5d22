"""Container lifecycle: CRI ContainerConfig + image config → OCI bundle run under conmon."""
