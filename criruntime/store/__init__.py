"""Metadata on disk: one sqlite database (WAL) under the root dir, the single source of truth."""
