# Vault policy of service `campaigns` (AppRole pm-campaigns), loaded by libs/common/provision.py.

# Its own secrets: secret/campaigns/* (KV v2).
path "secret/data/campaigns/*" {
  capabilities = ["create", "read", "update", "patch", "delete"]
}
path "secret/metadata/campaigns/*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list"]
}

# Platform-wide settings every process reads at start-up (e.g. the principal signing key).
path "secret/data/platform/*" {
  capabilities = ["read"]
}
