package main

import (
	"errors"
	"net"
	"strconv"
	"strings"
)

// The flag.Values below write into a fileConfig, so that flags, the
// environment and the file fill the same fields, each layer over the one
// below. Set never clears a field it was not given; isSet reports whether
// the field holds a value.

// setter is what every Value here is: a flag.Value that knows whether its
// field was set.
type setter interface {
	Set(string) error
	String() string
	isSet() bool
}

func isSet(v any) bool {
	s, ok := v.(setter)
	return ok && s.isSet()
}

type durationFlag struct{ p **duration }

func (f durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return errors.New("want a number with a unit, such as 10s, 500ms or 1m")
	}
	*f.p = &d
	return nil
}

func (f durationFlag) String() string {
	if f.p == nil || *f.p == nil {
		return ""
	}
	return (**f.p).String()
}

func (f durationFlag) isSet() bool { return f.p != nil && *f.p != nil }

type intFlag struct{ p **int }

func (f intFlag) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return errors.New("want a whole number")
	}
	*f.p = &n
	return nil
}

func (f intFlag) String() string {
	if f.p == nil || *f.p == nil {
		return ""
	}
	return strconv.Itoa(**f.p)
}

func (f intFlag) isSet() bool { return f.p != nil && *f.p != nil }

type int64Flag struct{ p **int64 }

func (f int64Flag) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return errors.New("want a whole number")
	}
	*f.p = &n
	return nil
}

func (f int64Flag) String() string {
	if f.p == nil || *f.p == nil {
		return ""
	}
	return strconv.FormatInt(**f.p, 10)
}

func (f int64Flag) isSet() bool { return f.p != nil && *f.p != nil }

type boolFlag struct{ p **bool }

func (f boolFlag) Set(s string) error {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return errors.New("want true, false, 1 or 0")
	}
	*f.p = &b
	return nil
}

func (f boolFlag) String() string {
	if f.p == nil || *f.p == nil {
		return ""
	}
	return strconv.FormatBool(**f.p)
}

func (f boolFlag) IsBoolFlag() bool { return true }
func (f boolFlag) isSet() bool      { return f.p != nil && *f.p != nil }

type stringPtrFlag struct{ p **string }

func (f stringPtrFlag) Set(s string) error {
	*f.p = &s
	return nil
}

func (f stringPtrFlag) String() string {
	if f.p == nil || *f.p == nil {
		return ""
	}
	return **f.p
}

func (f stringPtrFlag) isSet() bool { return f.p != nil && *f.p != nil }

// listFlag is a comma-separated list; each Set replaces the list.
type listFlag []string

func (f *listFlag) Set(s string) error {
	list := []string{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			list = append(list, p)
		}
	}
	*f = list
	return nil
}

func (f *listFlag) String() string {
	if f == nil {
		return ""
	}
	return strings.Join(*f, ",")
}

func (f *listFlag) isSet() bool { return f != nil && *f != nil }

// addrFlag is -addr or -api-addr: host:port, stored as a section's
// address and port.
type addrFlag struct {
	host **string
	port **int
}

func (f *addrFlag) Set(s string) error {
	host, port, err := splitAddr(strings.TrimSpace(s))
	if err != nil {
		return err
	}
	*f.host, *f.port = &host, &port
	return nil
}

func (f *addrFlag) String() string {
	if f == nil || f.host == nil || *f.port == nil || *f.host == nil {
		return ""
	}
	return net.JoinHostPort(**f.host, strconv.Itoa(**f.port))
}

func (f *addrFlag) isSet() bool {
	return f != nil && f.host != nil && (*f.host != nil || *f.port != nil)
}

// stringFlag and plainBool are flags of the command line itself.
type stringFlag string

func (f *stringFlag) Set(s string) error { *f = stringFlag(s); return nil }
func (f *stringFlag) String() string {
	if f == nil {
		return ""
	}
	return string(*f)
}

type plainBool bool

func (f *plainBool) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true or false")
	}
	*f = plainBool(b)
	return nil
}

func (f *plainBool) String() string   { return strconv.FormatBool(f != nil && bool(*f)) }
func (f *plainBool) IsBoolFlag() bool { return true }
