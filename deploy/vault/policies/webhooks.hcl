# Vault policy of service `webhooks` (AppRole pm-webhooks), loaded by libs/common/provision.py.

# Its own secrets: secret/webhooks/* (KV v2).
path "secret/data/webhooks/*" {
  capabilities = ["create", "read", "update", "patch", "delete"]
}
path "secret/metadata/webhooks/*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list"]
}

# Platform-wide settings every process reads at start-up (e.g. the principal signing key).
path "secret/data/platform/*" {
  capabilities = ["read"]
}
