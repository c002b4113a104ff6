"""Sending domains of the delivery service: a tenant proves it owns a domain (DKIM, SPF,
DMARC, return-path and tracking records in its DNS) before live mail may use it as sender.

`records` builds and checks the records (pure), `dkim` makes and uses the DKIM keys (their
private halves live in Vault only), `resolver` asks DNS, `cloudflare` publishes records
through Cloudflare's API, `repository` / `service` / `api` follow the service layout.
"""
