"""ESP connectors (seed 003 connector pattern): one module per provider, one registry."""
