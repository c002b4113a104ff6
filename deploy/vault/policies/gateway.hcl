# Vault policy of service `gateway` (AppRole pm-gateway), loaded by libs/common/provision.py.

# Its own secrets: secret/gateway/* (KV v2).
path "secret/data/gateway/*" {
  capabilities = ["create", "read", "update", "patch", "delete"]
}
path "secret/metadata/gateway/*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list"]
}

# Platform-wide settings every process reads at start-up (e.g. the principal signing key).
path "secret/data/platform/*" {
  capabilities = ["read"]
}
