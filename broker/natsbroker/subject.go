package natsbroker

import (
	"errors"
	"fmt"
	"strings"
)

// maxTokenLen bounds an encoded channel name (or client ID) so that every
// subject we build stays well below the NATS server's 4 KiB control line
// limit, beyond which the server drops the connection.
const maxTokenLen = 1024

// errEmptyName is returned for an empty channel name or client ID.
var errEmptyName = errors.New("natsbroker: empty channel name or client ID")

// safeByte reports whether b may appear as itself in a subject token. Every
// other byte (the separator '.', the wildcards '*' and '>', whitespace,
// '%', '$', non-ASCII) is written as %XX.
func safeByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("-_:@=+,!~#&;/|", b) >= 0
}

// subjectToken encodes s as one subject token. The encoding is injective,
// so two channel names never share a subject.
func subjectToken(s string) (string, error) {
	if s == "" {
		return "", errEmptyName
	}
	const hexDigits = "0123456789ABCDEF"
	var sb strings.Builder
	sb.Grow(len(s))
	for i := 0; i < len(s); i++ {
		b := s[i]
		if safeByte(b) {
			sb.WriteByte(b)
			continue
		}
		sb.WriteByte('%')
		sb.WriteByte(hexDigits[b>>4])
		sb.WriteByte(hexDigits[b&0xF])
	}
	if sb.Len() > maxTokenLen {
		return "", fmt.Errorf("natsbroker: name of %d bytes is too long (at most %d once encoded)", len(s), maxTokenLen)
	}
	return sb.String(), nil
}
