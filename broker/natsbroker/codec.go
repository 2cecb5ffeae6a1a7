package natsbroker

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/wsgate/wsgate/broker"
)

// Message bodies are a small binary envelope rather than JSON: payloads
// and client infos are arbitrary bytes, and base64 in JSON would grow every
// publication by a third. The layout is versioned by its first byte.
//
//	publication: version=1, flags, uvarint time (Unix ms),
//	             bytes data, [info], [uvarint n, n × (string key, string value)]
//	info:        string client ID, string user ID, bytes conn info, bytes chan info
//
// where bytes and string are a uvarint length followed by that many bytes,
// flags bit 0 says an info follows and bit 1 that tags follow.
const (
	codecVersion = 1

	flagInfo = 1 << 0
	flagTags = 1 << 1
)

var errCorrupt = errors.New("natsbroker: corrupt message body")

func appendBytes(buf, b []byte) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(b)))
	return append(buf, b...)
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

func appendInfo(buf []byte, info *broker.ClientInfo) []byte {
	buf = appendString(buf, info.ClientID)
	buf = appendString(buf, info.UserID)
	buf = appendBytes(buf, info.ConnInfo)
	return appendBytes(buf, info.ChanInfo)
}

// encodePublication appends pub's envelope to buf.
func encodePublication(buf []byte, pub *broker.Publication) []byte {
	var flags byte
	if pub.Info != nil {
		flags |= flagInfo
	}
	if len(pub.Tags) > 0 {
		flags |= flagTags
	}
	buf = append(buf, codecVersion, flags)
	buf = binary.AppendUvarint(buf, uint64(pub.Time))
	buf = appendBytes(buf, pub.Data)
	if pub.Info != nil {
		buf = appendInfo(buf, pub.Info)
	}
	if len(pub.Tags) > 0 {
		buf = binary.AppendUvarint(buf, uint64(len(pub.Tags)))
		for k, v := range pub.Tags {
			buf = appendString(buf, k)
			buf = appendString(buf, v)
		}
	}
	return buf
}

// encodeInfo appends info's envelope to buf.
func encodeInfo(buf []byte, info *broker.ClientInfo) []byte {
	buf = append(buf, codecVersion)
	return appendInfo(buf, info)
}

// reader decodes an envelope; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = errCorrupt
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// bytes returns the next length-prefixed field, nil when empty. The result
// aliases the input.
func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errCorrupt
		return nil
	}
	if n == 0 {
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) info() *broker.ClientInfo {
	info := &broker.ClientInfo{
		ClientID: string(r.bytes()),
		UserID:   string(r.bytes()),
		ConnInfo: r.bytes(),
		ChanInfo: r.bytes(),
	}
	if r.err != nil {
		return nil
	}
	return info
}

func (r *reader) version() {
	if v := r.byte(); r.err == nil && v != codecVersion {
		r.err = fmt.Errorf("natsbroker: message body version %d, this node reads %d", v, codecVersion)
	}
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = errCorrupt
	}
	return r.err
}

// decodePublication decodes a publication envelope. Data, infos and tags
// alias b.
func decodePublication(b []byte) (*broker.Publication, error) {
	r := reader{b: b}
	r.version()
	flags := r.byte()
	pub := &broker.Publication{Time: int64(r.uvarint())}
	pub.Data = r.bytes()
	if pub.Data == nil && r.err == nil {
		pub.Data = []byte{}
	}
	if flags&flagInfo != 0 {
		pub.Info = r.info()
	}
	if flags&flagTags != 0 {
		n := r.uvarint()
		// Each tag takes at least two bytes, which bounds n by the input.
		if n > uint64(len(r.b))/2 {
			return nil, errCorrupt
		}
		pub.Tags = make(map[string]string, n)
		for range n {
			k := string(r.bytes())
			pub.Tags[k] = string(r.bytes())
		}
	}
	if flags&^(flagInfo|flagTags) != 0 && r.err == nil {
		r.err = errCorrupt
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return pub, nil
}

// decodeInfo decodes a client info envelope.
func decodeInfo(b []byte) (*broker.ClientInfo, error) {
	r := reader{b: b}
	r.version()
	info := r.info()
	if err := r.done(); err != nil {
		return nil, err
	}
	return info, nil
}
