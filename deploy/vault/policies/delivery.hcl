# Vault policy of service `delivery` (AppRole pm-delivery), loaded by libs/common/provision.py.

# Its own secrets: secret/delivery/* (KV v2).
path "secret/data/delivery/*" {
  capabilities = ["create", "read", "update", "patch", "delete"]
}
path "secret/metadata/delivery/*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list"]
}

# Platform-wide settings every process reads at start-up (e.g. the principal signing key).
path "secret/data/platform/*" {
  capabilities = ["read"]
}

# ESP credentials (Postmark, Mailgun, SendGrid, SES, SMTP), read-only.
path "secret/data/penguinmails/api-keys/*" {
  capabilities = ["read"]
}
