"""Generators of the public API documentation: the OpenAPI document, code examples, the Postman
collection, the AsyncAPI document of `pm.events` and the webhook event reference. Run
`python -m scripts.docs` to regenerate everything, `--check` to verify the committed files."""
