package natsbroker

import (
	"fmt"
	"strings"
	"testing"
)

// parseSubjectToken decodes a token made by subjectToken.
func parseSubjectToken(tok string) (string, error) {
	var sb strings.Builder
	for i := 0; i < len(tok); i++ {
		b := tok[i]
		if b != '%' {
			if !safeByte(b) {
				return "", fmt.Errorf("invalid byte %q", b)
			}
			sb.WriteByte(b)
			continue
		}
		if i+2 >= len(tok) {
			return "", fmt.Errorf("truncated escape in %q", tok)
		}
		hi, ok1 := unhex(tok[i+1])
		lo, ok2 := unhex(tok[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("invalid escape in %q", tok)
		}
		sb.WriteByte(hi<<4 | lo)
		i += 2
	}
	return sb.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// checkToken fails unless tok is one valid subject token that decodes to s.
func checkToken(t *testing.T, s, tok string) {
	t.Helper()
	if tok == "" || strings.ContainsAny(tok, ".*> \t\r\n$") {
		t.Fatalf("token %q of %q is not a single plain subject token", tok, s)
	}
	back, err := parseSubjectToken(tok)
	if err != nil || back != s {
		t.Fatalf("token %q of %q decodes to %q, %v", tok, s, back, err)
	}
}

func TestSubjectToken(t *testing.T) {
	seen := map[string]string{}
	for _, s := range []string{"news", "a.b", "a%2Eb", "a*", ">", "ns:room/1", "with space", "ünï", "$SYS", "%", "a..b", "-_:@=+,!~#&;/|"} {
		tok, err := subjectToken(s)
		if err != nil {
			t.Fatal(err)
		}
		checkToken(t, s, tok)
		if other, dup := seen[tok]; dup {
			t.Fatalf("%q and %q share the token %q", s, other, tok)
		}
		seen[tok] = s
	}
	if tok, _ := subjectToken("room-1"); tok != "room-1" {
		t.Fatalf("a plain name was escaped: %q", tok)
	}
	if _, err := subjectToken(""); err == nil {
		t.Fatal("an empty name was accepted")
	}
	if _, err := subjectToken(strings.Repeat("é", maxTokenLen)); err == nil {
		t.Fatal("a name too long once encoded was accepted")
	}
}

func FuzzSubjectToken(f *testing.F) {
	for _, s := range []string{"news", "a.b", "a%2Eb", "ünï", "*>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := subjectToken(s)
		if err != nil {
			return
		}
		checkToken(t, s, tok)
	})
}
