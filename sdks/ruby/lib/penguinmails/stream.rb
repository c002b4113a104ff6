# frozen_string_literal: true

require "json"
require "net/http"
require "openssl"

# The live event stream (GET /api/v1/events/stream, Server-Sent Events), hand-written: the
# generator skips operations that do not answer JSON.
#
# EventStream reconnects by itself with Last-Event-ID (the id of the last event your block
# finished with, or the stream head's id the server names on connect), so a dropped
# connection, the server's time limit or a reader cut off for falling behind costs neither an
# event nor a duplicate. SSE framing is parsed here (SSEDecoder) over Net::HTTP's read_body.
module PenguinMails
  # An incremental Server-Sent Events parser (the WHATWG rules): feed it the body's chunks as
  # they come; it returns the blocks each chunk completes. UTF-8 split across chunks, CRLF /
  # LF / CR line ends (a CR ending a chunk and the LF starting the next are one line end), a
  # leading BOM, comments (":" lines, the heartbeats), multi-line data, id (ignored when it
  # holds a NUL) and retry (digits only) are handled; a block the body ends in the middle of
  # is dropped, as the spec says.
  class SSEDecoder
    # One dispatched block. data is "" for a block that only set id or retry (the stream's
    # opening frame); id is the last event id in force (it persists from block to block);
    # event is "" when the block named none.
    Message = Struct.new(:id, :event, :data, :retry, keyword_init: true)

    BOM = "\xEF\xBB\xBF".b.freeze
    LINE_END = /[\r\n]/n.freeze

    # The last event id buffer (set by id:, kept across blocks) and the latest retry: (ms).
    attr_reader :last_event_id, :retry

    def initialize
      @buffer = +"".b
      @begun = false
      @after_cr = false
      @last_event_id = ""
      @retry = nil
      reset_block
    end

    # The blocks this chunk (bytes, any encoding) completes.
    def decode(chunk)
      @buffer << chunk.b
      unless @begun
        return [] if @buffer.bytesize < BOM.bytesize && BOM.start_with?(@buffer)

        @buffer = @buffer.byteslice(BOM.bytesize..) if @buffer.start_with?(BOM)
        @begun = true
      end
      lines
    end

    # The body ended: an unfinished block (or line) is discarded.
    def finish
      @buffer = +"".b
      reset_block
      []
    end

    private

    def lines
      out = []
      pos = 0
      if @after_cr && !@buffer.empty?
        pos = 1 if @buffer.getbyte(0) == 10
        @after_cr = false
      end
      while (i = @buffer.index(LINE_END, pos))
        message = line(@buffer.byteslice(pos, i - pos).force_encoding(Encoding::UTF_8).scrub)
        out << message if message
        pos = i + 1
        next unless @buffer.getbyte(i) == 13

        if pos == @buffer.bytesize
          @after_cr = true # the LF may start the next chunk
        elsif @buffer.getbyte(pos) == 10
          pos += 1
        end
      end
      @buffer = @buffer.byteslice(pos..)
      out
    end

    def line(text)
      return dispatch if text.empty?
      return nil if text.start_with?(":") # a comment: heartbeats, the goodbye note

      field, value = text.include?(":") ? text.split(":", 2) : [text, ""]
      value = value[1..] if value.start_with?(" ")
      case field
      when "event" then @event = value
      when "data" then @data << value
      when "id"
        return nil if value.include?("\0")

        @last_event_id = value
      when "retry"
        return nil unless value.match?(/\A[0-9]+\z/)

        @retry = @block_retry = value.to_i
      else return nil # unknown fields are ignored
      end
      @touched = true
      nil
    end

    def dispatch
      return nil unless @touched

      message = Message.new(id: @last_event_id, event: @event, data: @data.join("\n"), retry: @block_retry)
      reset_block
      message
    end

    def reset_block
      @event = ""
      @data = []
      @touched = false
      @block_retry = nil
    end
  end

  # One event: data is the webhook payload (version 2026-12-01) exactly as sent, JSON text.
  StreamEvent = Struct.new(:id, :type, :data) do
    # The payload, parsed: {"id", "type", "created_at", "data" => {...}}.
    def json
      JSON.parse(data)
    end
  end

  # Live events, for as long as you iterate: an Enumerator (each, next, take, lazy ...) that
  # reconnects by itself. last_event_id is the resume point: the last event your block
  # finished with (returned from), or the stream head before any event; pass it to a later
  # client.events.stream(last_event_id: ...) to miss nothing and repeat nothing.
  class EventStream < Enumerator
    PATH = "/api/v1/events/stream"
    # Heartbeats come every 15 s; a connection silent this long (seconds) is dead: reconnect.
    DEFAULT_READ_TIMEOUT = 60.0
    TIMEOUTS = [Net::OpenTimeout, Net::ReadTimeout, Net::WriteTimeout].freeze
    TRANSPORT_ERRORS = [*TIMEOUTS, SystemCallError, IOError, EOFError, SocketError,
                        OpenSSL::SSL::SSLError, Net::HTTPBadResponse].freeze

    attr_reader :last_event_id, :connections, :reconnect, :read_timeout

    def initialize(core, types: nil, campaign_ids: nil, contact_tags: nil, last_event_id: nil,
                   reconnect: true, read_timeout: DEFAULT_READ_TIMEOUT, on_connect: nil,
                   on_reconnect: nil, headers: {})
      @core = core
      @query = { types: csv(types), campaign_ids: csv(campaign_ids), contact_tags: csv(contact_tags) }
      @last_event_id = last_event_id.to_s.empty? ? nil : last_event_id.to_s
      @reconnect = reconnect
      @read_timeout = read_timeout
      @on_connect = on_connect
      @on_reconnect = on_reconnect
      @headers = headers
      @connections = 0
      @failures = 0
      @open_retries = 0
      super() { |yielder| run(yielder) }
    end

    private

    def run(yielder)
      loop do
        started = monotonic
        error = nil
        @in_caller = false
        begin
          connect_once(yielder)
        rescue PenguinMailsError, *TRANSPORT_ERRORS => e
          raise if @in_caller # your block's (or callback's) own error: not the stream's

          error = e
        end
        wait = after(started, error)
        return self if wait.nil?

        sleep(wait) if wait.positive?
      end
    end

    # One connection: its events until the server ends it (return) or it breaks (raise).
    def connect_once(yielder)
      uri, headers = @core.prepare(PATH, query: @query)
      headers = headers.merge(
        "Accept" => "text/event-stream", "Cache-Control" => "no-store", "Accept-Encoding" => "identity"
      ).merge(@headers)
      headers["Last-Event-ID"] = @last_event_id if @last_event_id
      http = Net::HTTP.new(uri.host, uri.port)
      http.use_ssl = uri.scheme == "https"
      http.open_timeout = @core.timeout
      http.write_timeout = @core.timeout
      http.read_timeout = @read_timeout # per read: heartbeats keep a live stream under it
      # Net::HTTP would send a GET again by itself after a read timeout or a reset, with the
      # Last-Event-ID of when it was built: a stream that moved on since would get events
      # twice. Reconnecting is this class's job.
      http.max_retries = 0
      http.start do |conn|
        conn.request(Net::HTTP::Get.new(uri, headers)) do |response|
          refuse(response) unless response.code.to_i == 200
          connected
          decoder = SSEDecoder.new
          response.read_body do |chunk|
            decoder.decode(chunk).each do |message|
              event = event_of(message)
              deliver(yielder, event) if event
            end
          end
        end
      end
    end

    def refuse(response)
      text = response.read_body
      body = begin
        text.nil? || text.empty? ? nil : JSON.parse(text)
      rescue JSON::ParserError
        text
      end
      headers = response.each_header.to_h
      retry_after = @core.parse_retry_after(headers["retry-after"])
      raise PenguinMails.error_for(response.code.to_i, body, headers, retry_after)
    end

    def connected
      @connections += 1
      call_out { @on_connect&.call }
    end

    def event_of(message)
      return StreamEvent.new(message.id, message.event, message.data) unless message.event.empty? || message.data.empty?

      # The opening frame names the stream head: a cursor before any event.
      @last_event_id = message.id if !message.id.empty? && @last_event_id.nil?
      nil
    end

    def deliver(yielder, event)
      call_out { yielder << event }
      # The block returned: it is done with this event, the resume point moves past it (a
      # block that breaks or raises resumes at this event).
      @last_event_id = event.id unless event.id.empty?
      @failures = 0
    end

    # Runs your code; its exceptions go through the stream untouched.
    def call_out
      @in_caller = true
      yield
      @in_caller = false
    end

    # Whether a failure may be followed by another attempt: always when reconnecting; else only
    # while opening the one connection, as any call is retried (max_retries times, and not
    # for a Retry-After beyond a minute).
    def may_retry?(retry_after = nil)
      return true if @reconnect
      return false if @connections.positive? || @open_retries >= @core.max_retries
      return false if retry_after && retry_after > MAX_RETRY_AFTER

      @open_retries += 1
      true
    end

    # How long to wait (seconds) before reconnecting; nil: stop. Raises what must surface.
    def after(started, exc)
      case exc
      when PenguinMailsError
        retry_after = exc.respond_to?(:retry_after) ? exc.retry_after : nil
        retry_after ||= @core.parse_retry_after(exc.headers["retry-after"]) # a 503's
        raise exc unless exc.status && @core.retryable?(exc.status) && may_retry?(retry_after)

        # Reconnecting, the server's Retry-After is waited however long (on_reconnect says so).
        wait = retry_after || @core.backoff(@failures)
        reason = exc.message
      when nil
        return nil unless @reconnect

        reason = "the server ended the stream"
        # Ended at once, again and again: back off rather than spin.
        wait = monotonic - started < 1.0 ? @core.backoff(@failures) : 0.0
      else
        unless may_retry?
          raise APITimeoutError.new("Event stream: #{exc.message}", code: "timeout") if TIMEOUTS.any? { |k| exc.is_a?(k) }

          raise APIConnectionError.new("Event stream: #{exc.message}", code: "connection_error")
        end
        wait = @core.backoff(@failures)
        reason = "connection lost (#{exc.class.name})"
      end
      @failures += 1 if wait.positive?
      call_out { @on_reconnect&.call(reason, wait) }
      wait
    end

    def csv(values)
      return nil if values.nil?

      joined = Array(values).map(&:to_s).reject(&:empty?).join(",")
      joined.empty? ? nil : joined
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end

  module Resources
    # client.events: the catalog, test triggers and the live stream.
    class Events
      # Live events (GET /api/v1/events/stream). With a block: runs it for each event, for as
      # long as the stream lasts (break to stop); without: the EventStream, an Enumerator.
      # Either way it reconnects with Last-Event-ID by itself, so nothing is missed or repeated.
      #
      # types: catalog types or patterns ("email.*"); campaign_ids / contact_tags narrow as
      # webhook endpoint filters do; last_event_id resumes after that event (ConflictError
      # event_stream_cursor_expired when older than the stream keeps, 24 h at least);
      # reconnect: false makes one connection (opened with the retries of any call), ends the
      # iteration when the server ends it and raises a later failure; read_timeout (seconds) of silence replaces the connection;
      # on_connect.call on every (re)connection, on_reconnect.call(reason, delay) before each
      # reconnection.
      def stream(types: nil, campaign_ids: nil, contact_tags: nil, last_event_id: nil, reconnect: true,
                 read_timeout: EventStream::DEFAULT_READ_TIMEOUT, on_connect: nil, on_reconnect: nil,
                 headers: {}, &block)
        stream = EventStream.new(
          @core, types: types, campaign_ids: campaign_ids, contact_tags: contact_tags,
                 last_event_id: last_event_id, reconnect: reconnect, read_timeout: read_timeout,
                 on_connect: on_connect, on_reconnect: on_reconnect, headers: headers
        )
        return stream unless block

        stream.each(&block)
        stream
      end
    end
  end
end
