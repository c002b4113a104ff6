# Vault policy of service `keys` (AppRole pm-keys), loaded by libs/common/provision.py.

# Its own secrets: secret/keys/* (KV v2).
path "secret/data/keys/*" {
  capabilities = ["create", "read", "update", "patch", "delete"]
}
path "secret/metadata/keys/*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list"]
}

# Platform-wide settings every process reads at start-up (e.g. the principal signing key).
path "secret/data/platform/*" {
  capabilities = ["read"]
}

# API key material lives on its own KV v2 mount, owned by this service alone.
path "api_keys/data/*" {
  capabilities = ["create", "read", "update", "patch", "delete"]
}
path "api_keys/metadata/*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list"]
}
