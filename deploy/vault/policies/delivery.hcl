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

# ESP credentials, read-only, one path per provider: no glob, because the same folder holds
# billing's live Stripe key (penguinmails/api-keys/stripe), which delivery must never read.
path "secret/data/penguinmails/api-keys/postmark" {
  capabilities = ["read"]
}
path "secret/data/penguinmails/api-keys/mailgun" {
  capabilities = ["read"]
}
path "secret/data/penguinmails/api-keys/sendgrid" {
  capabilities = ["read"]
}
path "secret/data/penguinmails/api-keys/ses" {
  capabilities = ["read"]
}
path "secret/data/penguinmails/api-keys/smtp" {
  capabilities = ["read"]
}
