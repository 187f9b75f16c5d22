"""Images: references, registry client, content store, layer store, the CRI image verbs, GC."""
