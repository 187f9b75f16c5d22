"""Forward-only schema migrations. Append; never edit a migration that has shipped.

The version reached is kept in `PRAGMA user_version`, so opening an older database brings it
forward inside one transaction, and a database from a newer criruntime is refused.
"""

MIGRATIONS: list[str] = [
    # 1: node settings, pods, containers, images.
    """
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE pods (
        id         TEXT PRIMARY KEY,
        name_key   TEXT NOT NULL UNIQUE,  -- name_namespace_uid_attempt, unique per node
        state      TEXT NOT NULL,
        created_at INTEGER NOT NULL,      -- unix nanoseconds
        config     BLOB NOT NULL,         -- serialized PodSandboxConfig
        runtime    TEXT NOT NULL,         -- runtime handler name
        data       TEXT NOT NULL          -- JSON: namespaces, cgroup, network result, ...
    );
    CREATE TABLE containers (
        id         TEXT PRIMARY KEY,
        pod_id     TEXT NOT NULL REFERENCES pods(id),
        name_key   TEXT NOT NULL UNIQUE,  -- name_podname_namespace_uid_attempt
        state      TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        config     BLOB NOT NULL,         -- serialized ContainerConfig (resources as updated)
        image_id   TEXT NOT NULL,
        runtime    TEXT NOT NULL,         -- runtime handler name
        data       TEXT NOT NULL          -- JSON: bundle, pid, exit code, times, user, ...
    );
    CREATE INDEX containers_by_pod ON containers(pod_id);
    CREATE TABLE images (
        id         TEXT PRIMARY KEY,      -- config digest
        manifest_digest TEXT NOT NULL,    -- platform manifest (not the index)
        size       INTEGER NOT NULL,      -- manifest + config + compressed layers
        created_at INTEGER NOT NULL,      -- unix nanoseconds
        data       TEXT NOT NULL          -- JSON: config, manifest, chain_ids, blobs
    );
    CREATE TABLE image_names (
        name     TEXT PRIMARY KEY,        -- normalised repo:tag or repo@digest
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
    );
    CREATE INDEX image_names_by_image ON image_names(image_id);
    CREATE TABLE layer_leases (           -- layers kept alive by something other than an image
        owner    TEXT NOT NULL,           -- e.g. a container id
        chain_id TEXT NOT NULL,
        PRIMARY KEY (owner, chain_id)
    );
    """,
]
