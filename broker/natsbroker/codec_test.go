package natsbroker

import (
	"bytes"
	"maps"
	"testing"

	"github.com/wsgate/wsgate/broker"
)

func samePublication(a, b *broker.Publication) bool {
	return bytes.Equal(a.Data, b.Data) && a.Time == b.Time && maps.Equal(a.Tags, b.Tags) &&
		(a.Info == nil) == (b.Info == nil) && (a.Info == nil || sameClientInfo(a.Info, b.Info))
}

func sameClientInfo(a, b *broker.ClientInfo) bool {
	return a.ClientID == b.ClientID && a.UserID == b.UserID &&
		bytes.Equal(a.ConnInfo, b.ConnInfo) && bytes.Equal(a.ChanInfo, b.ChanInfo)
}

var samplePublications = []*broker.Publication{
	{Data: []byte{}},
	{Data: []byte(`{"text":"hi"}`), Time: 1_700_000_000_000},
	{Data: []byte("x"), Info: &broker.ClientInfo{ClientID: "c", UserID: "u", ConnInfo: []byte(`{}`), ChanInfo: []byte(`[1]`)}},
	{Data: []byte("x"), Info: &broker.ClientInfo{}},
	{Data: bytes.Repeat([]byte{0, 0xff}, 40000), Tags: map[string]string{"a": "1", "": "", "ü": "\r\n"}},
}

func TestPublicationRoundTrip(t *testing.T) {
	for i, pub := range samplePublications {
		got, err := decodePublication(encodePublication(nil, pub))
		if err != nil {
			t.Fatalf("sample %d: %v", i, err)
		}
		if !samePublication(got, pub) {
			t.Fatalf("sample %d: decoded %+v, want %+v", i, got, pub)
		}
	}
}

func TestInfoRoundTrip(t *testing.T) {
	info := &broker.ClientInfo{ClientID: "c1", UserID: "", ConnInfo: []byte(`{"a":1}`)}
	got, err := decodeInfo(encodeInfo(nil, info))
	if err != nil || !sameClientInfo(got, info) {
		t.Fatalf("decoded %+v, %v", got, err)
	}
}

// Every truncation, an unknown version, unknown flags and trailing bytes
// are errors, never a panic or a partial value.
func TestDecodeRejectsCorrupt(t *testing.T) {
	for i, pub := range samplePublications {
		enc := encodePublication(nil, pub)
		for n := range len(enc) {
			if _, err := decodePublication(enc[:n]); err == nil {
				t.Fatalf("sample %d truncated to %d bytes decoded", i, n)
			}
		}
		if _, err := decodePublication(append(enc, 0)); err == nil {
			t.Fatalf("sample %d with a trailing byte decoded", i)
		}
		bad := bytes.Clone(enc)
		bad[0] = 2
		if _, err := decodePublication(bad); err == nil {
			t.Fatalf("sample %d with version 2 decoded", i)
		}
		bad = bytes.Clone(enc)
		bad[1] |= 0x80
		if _, err := decodePublication(bad); err == nil {
			t.Fatalf("sample %d with an unknown flag decoded", i)
		}
	}
	// A tag count larger than the input could hold.
	if _, err := decodePublication([]byte{codecVersion, flagTags, 0, 0, 0xff, 0xff, 0x03}); err == nil {
		t.Fatal("an impossible tag count decoded")
	}
}

func FuzzDecodePublication(f *testing.F) {
	for _, pub := range samplePublications {
		f.Add(encodePublication(nil, pub))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		pub, err := decodePublication(b)
		if err != nil {
			return
		}
		again, err := decodePublication(encodePublication(nil, pub))
		if err != nil {
			t.Fatalf("re-encoding a decoded publication: %v", err)
		}
		if !samePublication(again, pub) {
			t.Fatalf("round trip changed %+v into %+v", pub, again)
		}
	})
}

func FuzzDecodeInfo(f *testing.F) {
	f.Add(encodeInfo(nil, &broker.ClientInfo{ClientID: "c", UserID: "u", ConnInfo: []byte("{}")}))
	f.Add([]byte{codecVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := decodeInfo(b)
		if err != nil {
			return
		}
		again, err := decodeInfo(encodeInfo(nil, info))
		if err != nil || !sameClientInfo(again, info) {
			t.Fatalf("round trip of %+v: %+v, %v", info, again, err)
		}
	})
}
