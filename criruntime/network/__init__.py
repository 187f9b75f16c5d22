"""CNI: finding the network config and executing plugins (spec 1.0)."""
