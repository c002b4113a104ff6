# frozen_string_literal: true

require "base64"
require "json"
require "openssl"

module PenguinMails
  # Standard Webhooks verification (webhook-id, webhook-timestamp, webhook-signature).
  module Webhook
    module_function

    # The HMAC key: "whsec_<base64>" decoded, or a raw printable secret (16-128 chars) as bytes.
    def secret_key(secret)
      if secret.start_with?("whsec_")
        begin
          return Base64.strict_decode64(secret.delete_prefix("whsec_"))
        rescue ArgumentError
          raise WebhookVerificationError.new("Bad whsec_ secret", code: "invalid_secret")
        end
      end
      unless secret.length.between?(16, 128) && secret.match?(/\A[\x21-\x7e]+\z/)
        raise WebhookVerificationError.new("A raw secret is 16-128 printable characters",
                                           code: "invalid_secret")
      end
      secret.b
    end

    # The "v1,<base64>" signature of "{id}.{timestamp}.{payload}".
    def sign(id, timestamp, payload, secret)
      mac = OpenSSL::HMAC.digest("SHA256", secret_key(secret), "#{id}.#{timestamp}.#{payload.b}".b)
      "v1,#{Base64.strict_encode64(mac)}"
    end

    # Verify a delivery (pass the raw body as received) and return its parsed JSON payload.
    def verify(payload, headers, secret, tolerance: 300)
      # Plain names ("webhook-id") or Rack/Rails env names ("HTTP_WEBHOOK_ID") alike.
      h = headers.to_h.transform_keys { |k| k.to_s.downcase.delete_prefix("http_").tr("_", "-") }
      id = first(h["webhook-id"])
      ts = first(h["webhook-timestamp"])
      sigs = first(h["webhook-signature"])
      if [id, ts, sigs].any? { |v| v.nil? || v.empty? }
        raise WebhookVerificationError.new("Missing webhook-id, webhook-timestamp or webhook-signature",
                                           code: "missing_headers")
      end
      timestamp = Integer(ts, exception: false)
      raise WebhookVerificationError.new("Bad webhook-timestamp", code: "bad_timestamp") unless timestamp
      if (Time.now.to_i - timestamp).abs > tolerance
        raise WebhookVerificationError.new("webhook-timestamp outside the tolerance",
                                           code: "timestamp_out_of_range")
      end
      expected = sign(id, timestamp, payload, secret).split(",", 2)[1]
      ok = sigs.split(" ").any? do |part|
        version, sig = part.split(",", 2)
        version == "v1" && sig && OpenSSL.fixed_length_secure_compare(sig, expected)
      rescue ArgumentError
        false
      end
      raise WebhookVerificationError.new("No matching signature", code: "bad_signature") unless ok

      JSON.parse(payload)
    end

    def first(value)
      value.is_a?(Array) ? value.first : value
    end
  end
end
