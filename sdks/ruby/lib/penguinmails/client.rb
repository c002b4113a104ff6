# frozen_string_literal: true

require "json"
require "net/http"
require "securerandom"
require "time"
require "uri"

module PenguinMails
  DEFAULT_BASE_URL = "https://api.penguinmails.com"
  # The longest Retry-After waited inside one call; a longer one surfaces as RateLimitError.
  MAX_RETRY_AFTER = 60.0

  # The transport: auth, retries with backoff, idempotency keys, timeouts, pagination.
  class Transport
    attr_reader :api_key, :access_token, :base_url, :max_retries, :timeout

    def initialize(api_key:, access_token:, base_url:, max_retries:, timeout:, default_headers:)
      @api_key = presence(api_key) || presence(ENV["PENGUINMAILS_API_KEY"])
      @access_token = presence(access_token) || presence(ENV["PENGUINMAILS_ACCESS_TOKEN"])
      @base_url = (presence(base_url) || presence(ENV["PENGUINMAILS_BASE_URL"]) || DEFAULT_BASE_URL)
                  .sub(%r{/+\z}, "")
      @max_retries = max_retries
      @timeout = timeout
      @default_headers = default_headers
    end

    def request(method, path, **kw)
      send_request(method, path, **kw).first
    end

    def list(method, path, **kw)
      data, meta = send_request(method, path, **kw)
      Page.new(self, method, path, kw, data, meta)
    end

    # One call: [data, meta] of the envelope, or a typed error after the retries.
    def send_request(method, path, body: nil, query: nil, auth: :key, idempotent: false, options: {})
      uri, headers = prepare(path, query: query, auth: auth)
      # One key per call, reused by every retry: the API answers a retry with the stored result.
      key = options[:idempotency_key] || (idempotent ? SecureRandom.uuid : nil)
      headers["Idempotency-Key"] = key if key
      headers["Content-Type"] = "application/json" unless body.nil?
      headers.merge!(options[:headers] || {})
      payload = body.nil? ? nil : JSON.generate(body)
      retries = options.fetch(:max_retries, max_retries)
      timeout = options.fetch(:timeout, @timeout)
      safe = method != :post || !key.nil?
      attempt = 0
      loop do
        can_retry = safe && attempt < retries
        begin
          response = perform(method, uri, headers, payload, timeout)
        rescue Net::OpenTimeout, Net::ReadTimeout, Net::WriteTimeout => e
          raise APITimeoutError.new("Request timed out after #{timeout} s: #{e.message}", code: "timeout") unless can_retry

          sleep(backoff(attempt))
          attempt += 1
          next
        rescue SystemCallError, IOError, EOFError, SocketError, OpenSSL::SSL::SSLError => e
          raise APIConnectionError.new("Connection error: #{e.message}", code: "connection_error") unless can_retry

          sleep(backoff(attempt))
          attempt += 1
          next
        end
        status = response.code.to_i
        parsed = parse(response.body)
        if status.between?(200, 299)
          return [parsed["data"], parsed["meta"] || {}] if parsed.is_a?(Hash) && parsed.key?("data")

          return [parsed, {}]
        end
        response_headers = response.each_header.to_h
        retry_after = parse_retry_after(response_headers["retry-after"])
        raise PenguinMails.error_for(status, parsed, response_headers, retry_after) unless can_retry && retryable?(status)

        sleep(retry_after && retry_after <= MAX_RETRY_AFTER ? retry_after : backoff(attempt))
        attempt += 1
      end
    end

    # The URI and headers (credentials, User-Agent, default headers) of a call: what
    # send_request sends, and what the event stream opens its connections with.
    def prepare(path, query: nil, auth: :key)
      uri = URI(base_url + path)
      params = encode_query(query)
      uri.query = URI.encode_www_form(params) unless params.empty?
      headers = {
        "Accept" => "application/json",
        "User-Agent" => "penguinmails-ruby/#{VERSION}"
      }.merge(@default_headers)
      credential = credential_for(auth)
      headers["Authorization"] = "Bearer #{credential}" if credential
      [uri, headers]
    end

    # 0.5 s, 1 s, 2 s ... capped at 8 s, minus up to 25 % of jitter.
    def backoff(retry_number)
      [0.5 * (2**retry_number), 8.0].min * (1 - (0.25 * rand))
    end

    # Seconds a Retry-After header asks for (seconds or an HTTP date), or nil.
    def parse_retry_after(raw)
      return nil if raw.nil? || raw.empty?

      Float(raw, exception: false)&.then { |s| [s, 0.0].max } ||
        begin
          [Time.httpdate(raw) - Time.now, 0.0].max
        rescue ArgumentError
          nil
        end
    end

    # Statuses worth another attempt: 408, 429 and 5xx but 501.
    def retryable?(status)
      [408, 429].include?(status) || (status >= 500 && status != 501)
    end

    private

    def presence(value)
      value.nil? || value.to_s.empty? ? nil : value.to_s
    end

    def credential_for(auth)
      case auth
      when :none then nil
      when :jwt then access_token || api_key
      else api_key || access_token
      end
    end

    def perform(method, uri, headers, payload, timeout)
      http = Net::HTTP.new(uri.host, uri.port)
      http.use_ssl = uri.scheme == "https"
      http.open_timeout = timeout
      http.read_timeout = timeout
      http.write_timeout = timeout
      klass = {
        get: Net::HTTP::Get, post: Net::HTTP::Post, put: Net::HTTP::Put,
        patch: Net::HTTP::Patch, delete: Net::HTTP::Delete
      }.fetch(method)
      req = klass.new(uri, headers)
      req.body = payload if payload
      http.start { |conn| conn.request(req) }
    end

    def parse(text)
      return nil if text.nil? || text.empty?

      JSON.parse(text)
    rescue JSON::ParserError
      text
    end

    def encode_query(query)
      (query || {}).flat_map do |key, value|
        next [] if value.nil?

        Array(value).map { |v| [key.to_s, v.respond_to?(:iso8601) ? v.iso8601 : v.to_s] }
      end
    end
  end

  # One page of a list. `each` (and every Enumerable method) walks this page and every later one.
  class Page
    include Enumerable
    attr_reader :data, :meta

    def initialize(core, method, path, kw, data, meta)
      @core = core
      @method = method
      @path = path
      @kw = kw
      @data = data.is_a?(Array) ? data : []
      @meta = meta || {}
    end

    def pagination
      @meta["pagination"] || {}
    end

    def next_cursor
      pagination["next_cursor"]
    end

    def has_more?
      !next_kw.nil?
    end

    def next_page
      kw = next_kw
      kw && @core.list(@method, @path, **kw)
    end

    def each_page
      return enum_for(:each_page) unless block_given?

      page = self
      while page
        yield page
        page = page.next_page
      end
    end

    def each(&block)
      return enum_for(:each) unless block

      each_page { |page| page.data.each(&block) }
    end

    private

    def next_kw
      cursor = pagination["next_cursor"]
      more = pagination.key?("has_more") ? pagination["has_more"] : !cursor.nil?
      return nil if @data.empty? || !more

      query = (@kw[:query] || {}).transform_keys(&:to_s)
      if cursor
        query.delete("offset")
        query["cursor"] = cursor
      else
        query["offset"] = (pagination["offset"] || query["offset"].to_i) + @data.size
      end
      @kw.merge(query: query)
    end
  end

  module Resources
    # What every generated resource class holds.
    class Base
      def initialize(core)
        @core = core
      end

      private

      def seg(value)
        URI.encode_www_form_component(value.to_s).gsub("+", "%20")
      end

      def merge(body, fields)
        return fields.empty? ? nil : fields if body.nil?
        return body.merge(fields) if body.is_a?(Hash) && !fields.empty?

        body
      end
    end
  end
end
