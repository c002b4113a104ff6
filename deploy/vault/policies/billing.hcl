# Vault policy of service `billing` (AppRole pm-billing), loaded by libs/common/provision.py.

# Its own secrets: secret/billing/* (KV v2).
path "secret/data/billing/*" {
  capabilities = ["create", "read", "update", "patch", "delete"]
}
path "secret/metadata/billing/*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list"]
}

# Platform-wide settings every process reads at start-up (e.g. the principal signing key).
path "secret/data/platform/*" {
  capabilities = ["read"]
}

# Stripe credentials: the API key and the webhook signing secret, read-only.
path "secret/data/penguinmails/api-keys/stripe" {
  capabilities = ["read"]
}
path "secret/data/penguinmails/webhooks/stripe" {
  capabilities = ["read"]
}
