# frozen_string_literal: true

require_relative "lib/penguinmails"

Gem::Specification.new do |spec|
  spec.name = "penguinmails"
  spec.version = PenguinMails::VERSION
  spec.summary = "Official Ruby client of the PenguinMails API"
  spec.description = "Contacts, campaigns, emails, analytics, webhooks and API keys of the " \
                     "PenguinMails API, with retries, pagination and webhook verification. " \
                     "Standard library only (net/http, json)."
  spec.authors = ["PenguinMails"]
  spec.license = "MIT"
  spec.required_ruby_version = ">= 3.1"
  spec.files = Dir["lib/**/*.rb", "README.md"]
  spec.require_paths = ["lib"]
end
