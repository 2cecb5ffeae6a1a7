package conformance

import (
	"fmt"
	"testing"
)

// kosme is the Greek word for "world", with U+1F79 (small omicron with
// oxia) in second place: the greeting the Autobahn|Testsuite uses.
const kosme = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"

// utf8Vector is a named text payload.
type utf8Vector struct {
	name string
	text string
}

// validUTF8 are payloads a server must accept and echo.
var validUTF8 = []utf8Vector{
	{"ascii", "Hello, world!"},
	{"kosme", kosme},
	{"nul", "\x00"},
	{"U+007F", "\u007f"},
	{"2-byte-first-U+0080", "\u0080"},
	{"2-byte-last-U+07FF", "\u07ff"},
	{"3-byte-first-U+0800", "\u0800"},
	{"3-byte-euro", "€"},
	{"U+D7FF-before-surrogates", "\ud7ff"},
	{"U+E000-after-surrogates", "\ue000"},
	{"U+FEFF-bom", "\ufeff"},
	{"U+FFFD", "\ufffd"},
	{"U+FFFE", "\ufffe"},
	{"U+FFFF", "\uffff"},
	{"4-byte-first-U+10000", "\U00010000"},
	{"4-byte-emoji", "😀"},
	{"U+10FFFF", "\U0010ffff"},
	{"mixed", "Hello-µ@ßöäüàá-UTF-8!! " + kosme + " € 😀 \U0010ffff"},
}

// invalidUTF8 are payloads a server must refuse with 1007.
var invalidUTF8 = []utf8Vector{
	{"overlong-2byte", "\xc0\xaf"},
	{"overlong-2byte-nul", "\xc0\x80"},
	{"overlong-2byte-max", "\xc1\xbf"},
	{"overlong-3byte", "\xe0\x80\xaf"},
	{"overlong-3byte-max", "\xe0\x9f\xbf"},
	{"overlong-4byte", "\xf0\x80\x80\xaf"},
	{"overlong-4byte-max", "\xf0\x8f\xbf\xbf"},
	{"surrogate-U+D800", "\xed\xa0\x80"},
	{"surrogate-U+DBFF", "\xed\xaf\xbf"},
	{"surrogate-U+DC00", "\xed\xb0\x80"},
	{"surrogate-U+DFFF", "\xed\xbf\xbf"},
	{"surrogate-pair-U+D800-U+DC00", "\xed\xa0\x80\xed\xb0\x80"},
	{"surrogate-pair-U+DBFF-U+DFFF", "\xed\xaf\xbf\xed\xbf\xbf"},
	{"above-U+10FFFF", "\xf4\x90\x80\x80"},
	{"lead-F5", "\xf5\x80\x80\x80"},
	{"lead-F7-max", "\xf7\xbf\xbf\xbf"},
	{"5-byte-sequence", "\xf8\x88\x80\x80\x80"},
	{"6-byte-sequence", "\xfc\x84\x80\x80\x80\x80"},
	{"truncated-2byte-at-end", "abc\xc3"},
	{"truncated-3byte-at-end", "abc\xe2\x82"},
	{"truncated-4byte-at-end", "abc\xf0\x9f\x98"},
	{"truncated-3byte-in-middle", "\xe2\x82abc"},
	{"lead-without-continuation", "\xc3 "},
	{"lone-continuation-80", "\x80"},
	{"lone-continuation-BF", "\xbf"},
	{"continuation-run", "\x80\xbf\x80\xbf"},
	{"byte-FE", "\xfe"},
	{"byte-FF", "\xff"},
	{"bytes-FE-FE-FF-FF", "\xfe\xfe\xff\xff"},
	{"kosme-then-surrogate", kosme + "\xed\xa0\x80edited"},
	{"valid-then-truncated", "Hello-µ@ßöäüàá-UTF-8!!\xf0\x9f"},
}

// failFastUTF8 are payloads whose invalid sequence is complete, so that a
// server reading them knows the message is invalid before it ends.
var failFastUTF8 = []utf8Vector{
	{"byte-FF", "Hello\xff"},
	{"overlong-2byte", "Hello\xc0\xaf"},
	{"surrogate-U+D800", "Hello\xed\xa0\x80"},
	{"above-U+10FFFF", "Hello\xf4\x90\x80\x80"},
	{"lone-continuation", "Hello\x80"},
	{"kosme-then-surrogate", kosme + "\xed\xa0\x80edited"},
}

// utf8Cases checks UTF-8 validation of text messages (RFC 6455 sections
// 5.6 and 8.1; Autobahn section 6).
func (s *suite) utf8Cases() []testCase {
	var cs []testCase
	for _, v := range validUTF8 {
		p := []byte(v.text)
		var split []byte
		var echoes []wantMsg
		for k := 1; k < len(p); k++ {
			split = append(split, splitMessage(opText, p[:k], p[k:])...)
			echoes = append(echoes, wantText(v.text))
		}
		cs = append(cs,
			s.echoCase("valid/"+v.name, textFrame(v.text), 0, wantText(v.text)),
			s.echoCase("valid/"+v.name+"/1-byte-fragments", fragments(opText, 0, p, 1), 0, wantText(v.text)),
		)
		if len(p) > 1 {
			cs = append(cs, s.echoCase("valid/"+v.name+"/split-at-every-byte", split, 0, echoes...))
		}
	}
	invalid := []int{codeInvalidData}
	for _, v := range invalidUTF8 {
		p := []byte(v.text)
		cs = append(cs,
			s.failCase("invalid/"+v.name, textFrame(v.text), 0, invalid),
			s.failCase("invalid/"+v.name+"/1-byte-fragments", fragments(opText, 0, p, 1), 0, invalid),
		)
	}
	cs = append(cs,
		s.failCase("invalid/in-last-fragment",
			splitMessage(opText, []byte("Hello, "), []byte("world"), []byte("\xed\xa0\x80")), 0, invalid),
		s.failCase("invalid/sequence-split-across-fragments",
			splitMessage(opText, []byte("Hello \xf4"), []byte("\x90"), []byte("\x80\x80 world")), 0, invalid),
		s.failCase("invalid/after-echo",
			cat(textFrame("valid"), textFrame("\xff"), pingFrame([]byte("too late"))), 0, invalid, wantText("valid")),
		s.echoCase("invalid-in-binary-is-fine", binaryFrame([]byte("\xff\xfe\xc0\xaf")), 0, wantBinary([]byte("\xff\xfe\xc0\xaf"))),
	)
	for _, v := range failFastUTF8 {
		p := []byte(v.text)
		// A fragmented message whose first fragment is invalid: the final
		// fragment is never sent, so a server that validates only whole
		// messages times out here.
		cs = append(cs, testCase{fmt.Sprintf("fail-fast/fragment/%s", v.name), func(t *testing.T) {
			c := s.dial(t)
			c.send(rawFrame(false, 0, opText, p))
			c.expectClose(codeInvalidData)
		}})
		// A single frame that announces 1000 more bytes than are written,
		// in 1-byte writes: the server must check the payload as it
		// arrives.
		cs = append(cs, testCase{fmt.Sprintf("fail-fast/partial-frame/%s", v.name), func(t *testing.T) {
			whole := rawFrame(true, 0, opText, append(p, textPayload(1000)...))
			c := s.dial(t)
			c.sendChunks(whole[:len(whole)-1000], 1)
			c.expectAbort(ioTimeout, codeInvalidData)
		}})
	}
	return cs
}
