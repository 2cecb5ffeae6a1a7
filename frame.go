package wsgate

import (
	"encoding/binary"
)

// Opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

const (
	finBit  = 0x80
	rsv1Bit = 0x40
	rsv2Bit = 0x20
	rsv3Bit = 0x10
	maskBit = 0x80

	maxHeaderLen     = 14
	maxControlLength = 125
)

// putHeader writes a frame header for a payload of length n into b, which
// must hold maxHeaderLen bytes, and returns the header's length. When masked
// the 4-byte key follows the length.
func putHeader(b []byte, fin bool, rsv1 bool, op byte, n int, masked bool, key uint32) int {
	b0 := op
	if fin {
		b0 |= finBit
	}
	if rsv1 {
		b0 |= rsv1Bit
	}
	b[0] = b0
	var m byte
	if masked {
		m = maskBit
	}
	h := 2
	switch {
	case n <= 125:
		b[1] = m | byte(n)
	case n <= 0xFFFF:
		b[1] = m | 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
		h = 4
	default:
		b[1] = m | 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
		h = 10
	}
	if masked {
		binary.LittleEndian.PutUint32(b[h:], key)
		h += 4
	}
	return h
}

// headerLen returns the full header length announced by the first two bytes.
func headerLen(b0, b1 byte) int {
	n := 2
	switch b1 & 0x7F {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&maskBit != 0 {
		n += 4
	}
	return n
}

// maskBytes XORs b with the 4-byte key (little-endian in key) starting at key
// offset pos, and returns the offset for the byte after b.
func maskBytes(key uint32, pos int, b []byte) int {
	if len(b) == 0 {
		return pos
	}
	// Rotate the key so that byte 0 of k lines up with b[0].
	sh := 8 * uint(pos&3)
	k := key>>sh | key<<(32-sh)
	k64 := uint64(k) | uint64(k)<<32
	i := 0
	for ; i+32 <= len(b); i += 32 {
		v := b[i : i+32 : i+32]
		binary.LittleEndian.PutUint64(v[0:], binary.LittleEndian.Uint64(v[0:])^k64)
		binary.LittleEndian.PutUint64(v[8:], binary.LittleEndian.Uint64(v[8:])^k64)
		binary.LittleEndian.PutUint64(v[16:], binary.LittleEndian.Uint64(v[16:])^k64)
		binary.LittleEndian.PutUint64(v[24:], binary.LittleEndian.Uint64(v[24:])^k64)
	}
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k64)
	}
	for ; i < len(b); i++ {
		b[i] ^= byte(k)
		k = k>>8 | k<<24
	}
	return (pos + len(b)) & 3
}
