# Vault policy of service `inbox` (AppRole pm-inbox), loaded by libs/common/provision.py.

# Its own secrets: secret/inbox/* (KV v2).
path "secret/data/inbox/*" {
  capabilities = ["create", "read", "update", "patch", "delete"]
}
path "secret/metadata/inbox/*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list"]
}

# Platform-wide settings every process reads at start-up (e.g. the principal signing key,
# the reply-token key shared with delivery).
path "secret/data/platform/*" {
  capabilities = ["read"]
}

# The ESPs' inbound webhook secrets (basic auth, Mailgun signing key, SES topic), read-only.
# Named one by one: never the sending credentials under penguinmails/api-keys/.
path "secret/data/penguinmails/inbound/postmark" {
  capabilities = ["read"]
}
path "secret/data/penguinmails/inbound/mailgun" {
  capabilities = ["read"]
}
path "secret/data/penguinmails/inbound/sendgrid" {
  capabilities = ["read"]
}
path "secret/data/penguinmails/inbound/ses" {
  capabilities = ["read"]
}
