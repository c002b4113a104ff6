# frozen_string_literal: true

# PenguinMails::SSEDecoder, the event stream's Server-Sent Events framing (no stack needed).

require "minitest/autorun"
require "penguinmails"

class SSEDecoderTest < Minitest::Test
  BODY = (
    "\uFEFFretry: 2000\r\nid: head\r\n: connected\r\n\r\n" + # the opening frame, CRLF
    ": heartbeat\n\n" + # a comment alone: nothing
    "id: e1\nevent: email.opened\ndata: {\"name\": \"Zoë 🐧\"}\ndata:second line\ndata\n\n" +
    "event: email.clicked\rdata:  two spaces keep one\r\r" + # CR only; the id persists
    "id: bad\u0000id\nretry: soon\nfoo: bar\ndata: x\n\n" + # NUL id, bad retry, unknown field
    "id: e3\nevent: email.sent\ndata: unfinished" # the body ends mid-block: dropped
  ).b.freeze
  EXPECTED = [
    { id: "head", event: "", data: "", retry: 2000 },
    { id: "e1", event: "email.opened", data: "{\"name\": \"Zoë 🐧\"}\nsecond line\n", retry: nil },
    { id: "e1", event: "email.clicked", data: " two spaces keep one", retry: nil },
    { id: "e1", event: "", data: "x", retry: nil }
  ].freeze

  def decode_all(pieces)
    decoder = PenguinMails::SSEDecoder.new
    out = pieces.flat_map { |piece| decoder.decode(piece) } + decoder.finish
    out.map(&:to_h)
  end

  def test_blocks_comments_multi_line_data_line_ends_bom_id_and_retry_rules
    assert_equal EXPECTED, decode_all([BODY])
    assert_equal Encoding::UTF_8, PenguinMails::SSEDecoder.new.decode(BODY).last.data.encoding
  end

  def test_the_same_blocks_whatever_the_chunking
    assert_equal EXPECTED, decode_all(BODY.bytes.map(&:chr)) # byte by byte: mid-UTF-8 too
    (1...BODY.bytesize).each do |i|
      assert_equal EXPECTED, decode_all([BODY.byteslice(0, i), BODY.byteslice(i..)]), "split at byte #{i}"
    end
    # A CR ending one chunk and the LF starting the next are one line end, not two (which
    # would end the block early).
    assert_equal [{ id: "", event: "", data: "a\nb", retry: nil }],
                 decode_all(["data: a\r", "\ndata: b\r", "\n\r\n"])
    penguin = "data: 🐧\n\n".b
    assert_equal [{ id: "", event: "", data: "🐧", retry: nil }],
                 decode_all([penguin.byteslice(0, 7), penguin.byteslice(7, 1), penguin.byteslice(8..)])
  end
end
