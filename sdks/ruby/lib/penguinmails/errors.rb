# frozen_string_literal: true

module PenguinMails
  # Base class of every error the SDK raises: the API's code, message and request id.
  class PenguinMailsError < StandardError
    attr_reader :status, :code, :details, :request_id, :headers, :body

    def initialize(message = nil, status: nil, code: "error", details: nil, request_id: nil,
                   headers: nil, body: nil)
      super(message)
      @status = status
      @code = code
      @details = details || []
      @request_id = request_id
      @headers = headers || {}
      @body = body
    end
  end

  # 400 / 422: the request was invalid; details names the fields.
  class ValidationError < PenguinMailsError; end
  # 401: missing, invalid, expired or revoked credentials.
  class AuthenticationError < PenguinMailsError; end
  # 403: the key or user lacks the scope (or the plan) for this operation.
  class PermissionError < PenguinMailsError; end
  # 404: no such object (or another tenant's).
  class NotFoundError < PenguinMailsError; end
  # 409: conflicts with the current state.
  class ConflictError < PenguinMailsError; end

  # 429 after the retries: retry_after is how long to wait, in seconds.
  class RateLimitError < PenguinMailsError
    attr_reader :retry_after

    def initialize(message = nil, retry_after: nil, **kw)
      super(message, **kw)
      @retry_after = retry_after
    end
  end

  # Any other error answer of the API (5xx after the retries, ...).
  class APIError < PenguinMailsError; end
  # The API could not be reached after the retries.
  class APIConnectionError < PenguinMailsError; end
  # No answer within the timeout, after the retries.
  class APITimeoutError < APIConnectionError; end
  # A webhook whose signature, timestamp or headers do not verify.
  class WebhookVerificationError < PenguinMailsError; end

  BY_STATUS = {
    400 => ValidationError, 422 => ValidationError, 401 => AuthenticationError,
    403 => PermissionError, 404 => NotFoundError, 409 => ConflictError
  }.freeze

  def self.error_for(status, body, headers, retry_after)
    err = body.is_a?(Hash) && body["error"].is_a?(Hash) ? body["error"] : {}
    kw = {
      status: status,
      code: err["code"].is_a?(String) ? err["code"] : "http_#{status}",
      details: err["details"].is_a?(Array) ? err["details"] : [],
      request_id: err["request_id"] || headers["x-request-id"],
      headers: headers,
      body: body
    }
    message = err["message"].is_a?(String) ? err["message"] : "HTTP #{status}"
    return RateLimitError.new(message, retry_after: retry_after, **kw) if status == 429

    BY_STATUS.fetch(status, APIError).new(message, **kw)
  end
end
