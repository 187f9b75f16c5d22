"""The OCI runtime seam: runc / crun (and later conmon) behind one interface."""
