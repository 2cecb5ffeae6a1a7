package hub

import (
	"fmt"
	"strings"
)

// channelRules resolves channel names to their options.
type channelRules struct {
	maxLength  int
	boundary   string
	private    string
	userBound  string
	userSep    string
	def        *ChannelOptions
	namespaces map[string]*ChannelOptions
}

func newChannelRules(cfg ChannelConfig) (*channelRules, error) {
	r := &channelRules{
		maxLength:  cfg.MaxLength,
		boundary:   cfg.NamespaceBoundary,
		private:    cfg.PrivatePrefix,
		userBound:  cfg.UserBoundary,
		userSep:    cfg.UserSeparator,
		namespaces: make(map[string]*ChannelOptions, len(cfg.Namespaces)),
	}
	if r.maxLength <= 0 {
		r.maxLength = DefaultChannelMaxLength
	}
	if r.boundary == "" {
		r.boundary = ":"
	}
	switch r.private {
	case "":
		r.private = "$"
	case "-":
		r.private = ""
	}
	if r.userBound == "" {
		r.userBound = "#"
	}
	if r.userSep == "" {
		r.userSep = ","
	}
	def := cfg.Default
	if err := def.compile(""); err != nil {
		return nil, err
	}
	r.def = &def
	for _, ns := range cfg.Namespaces {
		if ns.Name == "" || strings.Contains(ns.Name, r.boundary) || !printableASCII(ns.Name) {
			return nil, fmt.Errorf("hub: invalid namespace name %q", ns.Name)
		}
		if r.namespaces[ns.Name] != nil {
			return nil, fmt.Errorf("hub: namespace %q defined twice", ns.Name)
		}
		o := ns.ChannelOptions
		if err := o.compile(ns.Name); err != nil {
			return nil, err
		}
		r.namespaces[ns.Name] = &o
	}
	return r, nil
}

// resolve returns ch's options and the part of its name after the
// namespace, or ErrorUnknownChannel.
func (r *channelRules) resolve(ch string) (*ChannelOptions, string, error) {
	trimmed := strings.TrimPrefix(ch, r.private)
	if i := strings.Index(trimmed, r.boundary); i >= 0 {
		o := r.namespaces[trimmed[:i]]
		if o == nil {
			return nil, "", ErrorUnknownChannel
		}
		return o, trimmed[i+len(r.boundary):], nil
	}
	return r.def, ch, nil
}

// validName reports whether ch (whose part after the namespace is rest) is
// an acceptable name: at most maxLength bytes, printable ASCII unless the
// namespace has a regex, which rest must then match.
func (r *channelRules) validName(ch, rest string, o *ChannelOptions) bool {
	if ch == "" || len(ch) > r.maxLength {
		return false
	}
	if o.regex != nil {
		return o.regex.MatchString(rest)
	}
	return printableASCII(ch)
}

func (r *channelRules) isPrivate(ch string) bool {
	return r.private != "" && strings.HasPrefix(ch, r.private)
}

func (r *channelRules) isUserLimited(ch string, o *ChannelOptions) bool {
	return o.AllowUserLimitedChannels && strings.Contains(ch, r.userBound)
}

// userAllowed reports whether user is listed after ch's user boundary.
func (r *channelRules) userAllowed(ch, user string) bool {
	i := strings.LastIndex(ch, r.userBound)
	if i < 0 {
		return true
	}
	if user == "" {
		return false
	}
	for _, u := range strings.Split(ch[i+len(r.userBound):], r.userSep) {
		if u == user {
			return true
		}
	}
	return false
}

// printableASCII reports whether s has only ASCII characters from space to
// tilde. Centrifugo accepts any ASCII; control characters in channel names
// only cause trouble (logs, terminals), so we refuse them.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// ChannelOptions returns the options of ch's namespace, or
// ErrorUnknownChannel for an unknown namespace, or ErrorBadRequest for an
// invalid name.
func (h *Hub) ChannelOptions(ch string) (ChannelOptions, error) {
	o, rest, err := h.rules.resolve(ch)
	if err != nil {
		return ChannelOptions{}, err
	}
	if !h.rules.validName(ch, rest, o) {
		return ChannelOptions{}, ErrorBadRequest
	}
	return *o, nil
}
