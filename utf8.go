package wsgate

import "unicode/utf8"

// utf8Validator checks UTF-8 across chunk boundaries, so that an invalid
// byte is caught as soon as it arrives rather than at the end of a message.
// The zero value expects the start of a character.
type utf8Validator struct {
	need   uint8 // continuation bytes still expected
	lo, hi byte  // allowed range of the next continuation byte
}

// write checks p and reports false at the first byte that can never be part
// of valid UTF-8.
func (v *utf8Validator) write(p []byte) bool {
	if v.need == 0 {
		// Validate everything up to the last character boundary in one
		// fast pass; only a trailing partial character is left for the
		// byte-by-byte state machine.
		cut := len(p)
		for i := len(p) - 1; i >= 0 && i >= len(p)-3; i-- {
			if b := p[i]; b >= 0xC0 {
				if i+seqLen(b) > len(p) {
					cut = i
				}
				break
			} else if b < 0x80 {
				break
			}
		}
		if !utf8.Valid(p[:cut]) {
			return false
		}
		p = p[cut:]
	}
	for _, b := range p {
		if v.need > 0 {
			if b < v.lo || b > v.hi {
				return false
			}
			v.need--
			v.lo, v.hi = 0x80, 0xBF
			continue
		}
		switch {
		case b < 0x80:
		case b >= 0xC2 && b <= 0xDF:
			v.need, v.lo, v.hi = 1, 0x80, 0xBF
		case b == 0xE0:
			v.need, v.lo, v.hi = 2, 0xA0, 0xBF
		case b >= 0xE1 && b <= 0xEC, b == 0xEE, b == 0xEF:
			v.need, v.lo, v.hi = 2, 0x80, 0xBF
		case b == 0xED:
			v.need, v.lo, v.hi = 2, 0x80, 0x9F // no surrogates
		case b == 0xF0:
			v.need, v.lo, v.hi = 3, 0x90, 0xBF
		case b >= 0xF1 && b <= 0xF3:
			v.need, v.lo, v.hi = 3, 0x80, 0xBF
		case b == 0xF4:
			v.need, v.lo, v.hi = 3, 0x80, 0x8F // nothing above U+10FFFF
		default:
			return false
		}
	}
	return true
}

// seqLen returns the length of the sequence a lead byte starts.
func seqLen(b byte) int {
	switch {
	case b >= 0xF0:
		return 4
	case b >= 0xE0:
		return 3
	}
	return 2
}

// complete reports whether the text seen so far ends on a character boundary.
func (v *utf8Validator) complete() bool { return v.need == 0 }

func (v *utf8Validator) reset() { *v = utf8Validator{} }
