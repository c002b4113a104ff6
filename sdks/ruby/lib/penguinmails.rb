# frozen_string_literal: true

# penguinmails: the official Ruby client of the PenguinMails API, on the standard library only.
module PenguinMails
  VERSION = "0.1.0"
end

require_relative "penguinmails/errors"
require_relative "penguinmails/webhook"
require_relative "penguinmails/client"
require_relative "penguinmails/generated/resources"
require_relative "penguinmails/stream"

module PenguinMails
  # The API client: PenguinMails::Client.new(api_key:, base_url:), one reader per resource.
  #
  # api_key defaults to PENGUINMAILS_API_KEY, base_url to PENGUINMAILS_BASE_URL (else
  # https://api.penguinmails.com); access_token (a dashboard JWT) serves account routes.
  class Client
    attr_reader :core

    Resources::ALL.each_key { |name| attr_reader name }

    def initialize(api_key: nil, access_token: nil, base_url: nil, max_retries: 2, timeout: 60,
                   default_headers: {})
      @core = Transport.new(api_key: api_key, access_token: access_token, base_url: base_url,
                            max_retries: max_retries, timeout: timeout,
                            default_headers: default_headers)
      Resources::ALL.each { |name, klass| instance_variable_set("@#{name}", klass.new(@core)) }
    end

    def base_url
      @core.base_url
    end
  end
end
