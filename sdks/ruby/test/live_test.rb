# frozen_string_literal: true

# The penguinmails gem against a real PenguinMails stack. tests/sdks/test_sdk_suites.py starts
# the stack and runs this suite with PENGUINMAILS_BASE_URL, PENGUINMAILS_API_KEY,
# PENGUINMAILS_ACCESS_TOKEN and the PM_SDK_TEST_* fixtures set.

require "minitest/autorun"
require "base64"
require "json"
require "net/http"
require "securerandom"
require "timeout"
require "penguinmails"

%w[PENGUINMAILS_BASE_URL PENGUINMAILS_API_KEY PM_SDK_TEST_PROXY_URL].each do |name|
  abort "#{name} must be set (run through tests/sdks/test_sdk_suites.py)" if ENV[name].to_s.empty?
end

# Counts the HTTP attempts the SDK makes (Net::HTTP is its only transport; each attempt
# starts a connection, also one that is refused).
module RequestCounter
  @count = 0
  class << self
    attr_accessor :count
  end

  def start(*args, &block)
    RequestCounter.count += 1
    super
  end
end
Net::HTTP.prepend(RequestCounter)

# The Last-Event-ID each event stream request carried, in order.
module StreamRequests
  @sent = []
  class << self
    attr_reader :sent
  end

  def request(req, *args, &block)
    StreamRequests.sent << [req.path, req["Last-Event-ID"]] if req.path.start_with?("/api/v1/events/stream")
    super
  end
end
Net::HTTP.prepend(StreamRequests)

class LiveTest < Minitest::Test
  PROXY = ENV.fetch("PM_SDK_TEST_PROXY_URL")
  SENDER = "hello@example.com"

  def client
    @client ||= PenguinMails::Client.new
  end

  def unique
    SecureRandom.hex(4)
  end

  def control(path, body = nil)
    uri = URI(PROXY + path)
    res = body ? Net::HTTP.post(uri, JSON.generate(body)) : Net::HTTP.get_response(uri)
    JSON.parse(res.body)
  end

  def eventually(what, seconds: 60)
    deadline = Time.now + seconds
    loop do
      value = yield
      return value if value
      raise "timed out waiting for #{what}" if Time.now > deadline

      sleep 0.2
    end
  end

  def test_environment_fallbacks_and_explicit_arguments
    assert_equal ENV["PENGUINMAILS_BASE_URL"].sub(%r{/+\z}, ""), client.base_url
    assert_equal ENV["PENGUINMAILS_API_KEY"], client.core.api_key
    explicit = PenguinMails::Client.new(api_key: "pm_test_x", base_url: "http://example.test/")
    assert_equal "http://example.test", explicit.base_url
    assert_equal "pm_test_x", explicit.core.api_key
  end

  def test_campaign_email_and_analytics
    campaign = client.campaigns.create(
      name: "Welcome Series", subject: "Welcome to PenguinMails!", from_email: SENDER,
      content: { html: "<h1>Welcome!</h1>", text: "Welcome!" },
      recipients: { tags: ["welcome-#{unique}"] }
    )
    assert_equal "draft", campaign["status"]
    assert_equal "Welcome Series", client.campaigns.get(campaign["id"])["name"]
    result = client.emails.send(
      from: SENDER, to: "user@example.com", subject: "Test Email",
      content: { html: "<p>Hello from PenguinMails!</p>" },
      tracking: { track_opens: true, track_clicks: true }
    )
    assert result["message_id"]
    assert_equal "queued", result["status"]
    bulk = client.emails.send_bulk(
      from: SENDER, subject: "Hi {{name}}", text: "Hi {{name}}",
      recipients: [{ email: "user1@example.com", personalization: { name: "John" } }]
    )
    assert_equal 1, bulk["accepted"]
    assert_kind_of Hash, client.analytics.campaign(campaign["id"])
  end

  def test_errors_carry_code_message_and_request_id
    err = assert_raises(PenguinMails::ValidationError) do
      client.campaigns.create(name: "", from_email: SENDER, content: { text: "x" },
                              recipients: { tags: ["x"] })
    end
    assert_kind_of PenguinMails::PenguinMailsError, err
    assert_equal 422, err.status
    assert err.code
    assert err.request_id
    assert(err.details.any? { |d| d["field"].to_s.include?("name") }, err.details.inspect)
    missing = assert_raises(PenguinMails::NotFoundError) { client.contacts.get(SecureRandom.uuid) }
    assert_equal 404, missing.status
    auth = assert_raises(PenguinMails::AuthenticationError) do
      PenguinMails::Client.new(api_key: "pm_test_nope").contacts.list
    end
    assert_equal 401, auth.status
  end

  def test_rate_limit_surfaces_after_the_retries
    limited = PenguinMails::Client.new(api_key: ENV.fetch("PM_SDK_TEST_LIMITED_KEY"), max_retries: 2)
    before = RequestCounter.count
    err = assert_raises(PenguinMails::RateLimitError) { limited.contacts.list(limit: 1) }
    assert_equal 3, RequestCounter.count - before # the first try and two retries
    assert_equal 429, err.status
    assert_operator err.retry_after, :>, 0
    assert err.request_id
  end

  def test_connection_errors_are_retried_then_raised
    before = RequestCounter.count
    offline = PenguinMails::Client.new(base_url: "http://127.0.0.1:9", max_retries: 1)
    assert_raises(PenguinMails::APIConnectionError) { offline.contacts.list }
    assert_equal 2, RequestCounter.count - before
  end

  def test_a_lost_post_answer_is_retried_with_the_same_key_creating_one_object
    address = "retried-#{unique}@example.com"
    control("/__sdk_test/drop", { method: "POST", path: "/api/v1/contacts", count: 1 })
    contact = PenguinMails::Client.new(base_url: PROXY).contacts.create(email: address, first_name: "Once")
    posts = control("/__sdk_test/log").select { |r| r["path"] == "/api/v1/contacts" }
    lost = posts.select { |r| r["dropped"] }.last
    assert lost
    assert_equal 201, lost["status"] # the lost answer: the contact was created then
    assert lost["idempotency_key"]
    # Every try carried the same key; a try answered 429 or 503 (nothing done: rate limited, or
    # a dependency down) may come before or after the lost one; the last is the replay.
    tries = posts.select { |r| r["idempotency_key"] == lost["idempotency_key"] }
    assert_equal [lost], tries.select { |r| r["dropped"] }
    assert tries.last["replayed"]
    others = tries.reject { |r| r.equal?(lost) || r.equal?(tries.last) }
    assert_empty others.reject { |r| [429, 503].include?(r["status"]) }
    assert_equal [contact["id"]], client.contacts.list(email: address).data.map { |c| c["id"] }
  end

  def test_pagination_walks_three_pages
    tag = "paged-#{unique}"
    ids = 3.times.map { |i| client.contacts.create(email: "p#{i}-#{tag}@example.com", tags: [tag])["id"] }
    first = client.contacts.list(tag: [tag], limit: 1)
    assert_equal 1, first.data.size
    assert first.has_more?
    assert_equal 3, first.each_page.count
    assert_equal ids.sort, client.contacts.list(tag: [tag], limit: 1).map { |c| c["id"] }.sort
  end

  def test_webhook_verification_of_a_real_delivery
    path = "/hooks/ruby-#{unique}"
    receiver = URI(ENV.fetch("PM_SDK_TEST_RECEIVER_URL"))
    endpoint = client.webhooks.create(url: "http://#{receiver.host}:#{receiver.port}#{path}",
                                      events: ["email.opened"])
    client.webhooks.send_test(endpoint["id"], event_type: "email.opened")
    delivery = eventually("the test delivery") do
      got = control("/__sdk_test/webhooks?path=#{path}")
      got.empty? ? nil : got.first
    end
    payload = client.webhooks.verify(delivery["body"], delivery["headers"], endpoint["secret"])
    assert_equal "email.opened", payload["type"]
    assert_raises(PenguinMails::WebhookVerificationError) do
      client.webhooks.verify(delivery["body"].sub("email.opened", "email.clicked"),
                             delivery["headers"], endpoint["secret"])
    end
  end

  def test_raw_and_whsec_secrets_sign_alike
    raw = "my-own-secret-0123456789"
    body = JSON.generate({ type: "email.sent" })
    now = Time.now.to_i
    headers = { "webhook-id" => "msg_1", "webhook-timestamp" => now.to_s,
                "webhook-signature" => PenguinMails::Webhook.sign("msg_1", now, body, raw) }
    assert_equal({ "type" => "email.sent" }, PenguinMails::Webhook.verify(body, headers, raw))
    whsec = "whsec_#{Base64.strict_encode64(raw)}"
    assert_equal({ "type" => "email.sent" }, PenguinMails::Webhook.verify(body, headers, whsec))
    assert_raises(PenguinMails::WebhookVerificationError) { PenguinMails::Webhook.verify(body, headers, "short") }
    stale = headers.merge("webhook-timestamp" => (now - 3600).to_s)
    assert_raises(PenguinMails::WebhookVerificationError) { PenguinMails::Webhook.verify(body, stale, raw) }
  end

  def trigger(type)
    client.events.trigger(type: type)["id"]
  end

  # A stream that waits out a short 429 (it reconnects after its Retry-After, as the server
  # asked) has not reconnected on its own: a test result for none of these.
  def rate_limited?(reason)
    reason.start_with?("Rate limit")
  end

  def no_reconnect
    ->(reason, _delay) { flunk "reconnected: #{reason}" unless rate_limited?(reason) }
  end

  def test_event_stream_delivers_filters_and_resumes_with_last_event_id
    ids = []
    on_connect = lambda do # the stream is open: what is emitted now reaches it
      %w[email.clicked email.opened email.clicked].each { |type| ids << trigger(type) } if ids.empty?
    end
    first = client.events.stream(types: ["email.clicked"], on_connect: on_connect)
    assert_kind_of Enumerator, first
    ours = lambda do
      Timeout.timeout(60) do
        loop do
          event = first.next
          assert_equal "email.clicked", event.type # never the email.opened between them
          break event if ids.include?(event.id)
        end
      end
    end
    one = ours.call
    assert_equal ids[0], one.id
    assert_equal [ids[0], "email.clicked"], [one.json["id"], one.json["type"]]
    assert one.json["data"]["email"], one.data
    # Not finished with it until the loop asks for the next one: the resume point is still
    # the stream head the server named on connect (none while the store was empty).
    refute_equal one.id, first.last_event_id
    two = ours.call
    assert_equal ids[2], two.id
    assert_equal one.id, first.last_event_id # done with the first; the second is in hand

    meanwhile = trigger("email.clicked") # while no stream reads
    resumed = client.events.stream(types: "email.clicked", last_event_id: first.last_event_id,
                                   on_reconnect: ->(reason, _d) { flunk "swallowed: #{reason}" if reason == "mine" })
    seen = []
    err = assert_raises(PenguinMails::APIError) do
      Timeout.timeout(60) do
        resumed.each do |event|
          seen << event.id
          # A 503 of your own block's is yours: the stream neither swallows it nor reconnects.
          raise PenguinMails::APIError.new("mine", status: 503) if event.id == meanwhile
        end
      end
    end
    assert_equal "mine", err.message
    # Everything after the resume point, in order: the unfinished second one, then the one
    # emitted while disconnected; nothing before it, nothing twice.
    assert_equal [two.id, meanwhile], seen.select { |id| (ids + [meanwhile]).include?(id) }
    assert_equal seen.uniq, seen
    assert_equal two.id, resumed.last_event_id # the block raised on the last one: not done
  end

  def test_event_stream_reconnects_by_itself_with_last_event_id
    # The test stack ends streams after 4 s (PM_EVENTS_STREAM_MAX_SECONDS).
    first = nil
    second = nil
    reasons = []
    on_reconnect = lambda do |reason, delay|
      reasons << [reason, delay] unless rate_limited?(reason)
      next if second || first.nil? # after the first connection only

      # Emitted and stored before the reconnection: only the resume replays it.
      second = trigger("email.opened")
      sleep 1.5
    end
    stream = client.events.stream(types: "email.opened", on_connect: -> { first ||= trigger("email.opened") },
                                  on_reconnect: on_reconnect)
    StreamRequests.sent.clear
    seen = []
    Timeout.timeout(60) do
      stream.each do |event|
        seen << event.id
        break if second && event.id == second
      end
    end
    assert_equal [first, second], seen.select { |id| [first, second].include?(id) }
    assert_nil StreamRequests.sent.first[1]
    assert_equal first, StreamRequests.sent.last[1] # the connection that brought the second
    assert_includes StreamRequests.sent.last[0], "types=email.opened"
    assert_equal ["the server ended the stream", 0.0], reasons[0]
    assert_operator stream.connections, :>=, 2

    # reconnect: false, block form: it returns when the server ends the stream.
    result = client.events.stream(types: "email.bounced", reconnect: false) { |e| assert_equal "email.bounced", e.type }
    assert_kind_of PenguinMails::EventStream, result
    assert_equal 1, result.connections
    # No event, yet a resume point: the head the server named on connect (the events above
    # are stored).
    assert_match(/\A[0-9a-f-]{36}\z/, result.last_event_id)
  end

  def test_event_stream_replaces_a_silent_connection_after_read_timeout
    # Heartbeats come every second in the test stack: 0.3 s of silence times out.
    reasons = []
    watch = client.events.stream(types: "email.bounced", read_timeout: 0.3, on_reconnect: lambda { |reason, delay|
      next if rate_limited?(reason)

      reasons << reason
      assert_operator delay, :>, 0
      throw :stop
    })
    catch(:stop) { watch.each { |event| flunk "no event expected, got #{event.type}" } }
    assert_equal ["connection lost (Net::ReadTimeout)"], reasons
    assert_equal 1, watch.connections
    once = client.events.stream(types: "email.bounced", read_timeout: 0.3, reconnect: false)
    assert_raises(PenguinMails::APITimeoutError) { once.each { |e| flunk e.type } }
    # One connection: Net::HTTP did not send the GET again by itself after the timeout.
    assert_equal 1, once.connections
  end

  def test_event_stream_refusals_raise_the_mapped_errors_without_reconnecting
    first = ->(**kw) { client.events.stream(on_reconnect: no_reconnect, **kw).next }
    assert_raises(PenguinMails::ValidationError) { first.call(types: "email.teleported") }
    assert_raises(PenguinMails::ValidationError) { first.call(last_event_id: "not-an-event-id") }
    expired = assert_raises(PenguinMails::ConflictError) { first.call(last_event_id: SecureRandom.uuid) }
    assert_equal 409, expired.status
    assert_equal "event_stream_cursor_expired", expired.code
    # A 429: a reconnecting stream waits the server's Retry-After, however long (here about
    # two hours: a key whose bucket the stack left in debt); a reconnect: false one is opened
    # as any call, which does not wait more than a minute.
    limited = PenguinMails::Client.new(api_key: ENV.fetch("PM_SDK_TEST_LIMITED_KEY"))
    waits = []
    catch(:stop) do
      limited.events.stream(on_reconnect: lambda { |reason, delay|
        waits << [reason, delay]
        throw :stop # rather than wait that long
      }) { |event| flunk "no event expected, got #{event.type}" }
    end
    assert_equal 1, waits.size
    assert rate_limited?(waits[0][0]), waits[0][0]
    assert_operator waits[0][1], :>, 60
    retried = ->(reason, _delay) { flunk "retried: #{reason}" }
    err = assert_raises(PenguinMails::RateLimitError) do
      limited.events.stream(reconnect: false, on_reconnect: retried).next
    end
    assert_operator err.retry_after, :>, 60
  end

  def test_api_keys_with_an_access_token
    account = PenguinMails::Client.new(access_token: ENV.fetch("PENGUINMAILS_ACCESS_TOKEN"))
    created = account.api_keys.create(name: "rb-#{unique}", scopes: ["send_email"], mode: "test")
    assert created["key"].start_with?("pm_test_")
    assert_includes account.api_keys.list.map { |k| k["id"] }, created["id"]
    account.api_keys.revoke(created["id"])
    assert_raises(PenguinMails::AuthenticationError) do
      PenguinMails::Client.new(api_key: created["key"]).emails.send(
        from: SENDER, to: "b@example.com", subject: "x", text: "x"
      )
    end
  end
end
