package server

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/hub"
)

// namespaceName is what a namespace name must match, as in Centrifugo.
var namespaceName = regexp.MustCompile(`^[-a-zA-Z0-9_.]{2,}$`)

// validateChannels checks cfg with Centrifugo's rules and returns a
// *FieldError per invalid option, named "Channels.Default.HistoryTTL",
// "Channels.Namespaces[2].Name", "Channels.MaxLength" and so on, so that
// nothing the hub would refuse when Serve starts it gets that far.
func validateChannels(cfg *hub.ChannelConfig) []error {
	var errs []error
	bad := func(field string, value any, reason string) {
		errs = append(errs, &FieldError{Field: "Channels." + field, Value: value, Reason: reason})
	}
	if cfg.MaxLength < 0 {
		bad("MaxLength", cfg.MaxLength, "must not be negative (0 means 255)")
	}
	boundary := cfg.NamespaceBoundary
	if boundary == "" {
		boundary = ":"
	}
	if strings.TrimSpace(cfg.NamespaceBoundary) != cfg.NamespaceBoundary {
		bad("NamespaceBoundary", fmt.Sprintf("%q", cfg.NamespaceBoundary), "must not contain spaces")
	}
	for _, e := range validateChannelOptions(&cfg.Default) {
		bad("Default."+e.Field, e.Value, e.Reason)
	}
	seen := make(map[string]int, len(cfg.Namespaces))
	for i, ns := range cfg.Namespaces {
		field := fmt.Sprintf("Namespaces[%d].", i)
		switch first, dup := seen[ns.Name]; {
		case !namespaceName.MatchString(ns.Name):
			bad(field+"Name", fmt.Sprintf("%q", ns.Name), "a namespace name has at least 2 characters among letters, digits, '-', '_' and '.'")
		case strings.Contains(ns.Name, boundary):
			bad(field+"Name", fmt.Sprintf("%q", ns.Name), fmt.Sprintf("must not contain the namespace boundary %q", boundary))
		case dup:
			bad(field+"Name", fmt.Sprintf("%q", ns.Name), fmt.Sprintf("namespace defined twice (also at %d)", first))
		default:
			seen[ns.Name] = i
		}
		for _, e := range validateChannelOptions(&ns.ChannelOptions) {
			bad(field+e.Field, e.Value, e.Reason)
		}
	}
	return errs
}

// validateChannelOptions checks one set of channel options as Centrifugo
// does; Field is the option's name in hub.ChannelOptions.
func validateChannelOptions(o *hub.ChannelOptions) []*FieldError {
	var errs []*FieldError
	bad := func(field string, value any, reason string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Reason: reason})
	}
	if o.HistorySize < 0 {
		bad("HistorySize", o.HistorySize, "must not be negative")
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"HistoryTTL", o.HistoryTTL}, {"HistoryMetaTTL", o.HistoryMetaTTL}} {
		if d.v < 0 {
			bad(d.field, d.v, "must not be negative")
		}
	}
	switch {
	case o.HistorySize > 0 && o.HistoryTTL == 0:
		bad("HistoryTTL", o.HistoryTTL, fmt.Sprintf("history needs both a size and a TTL: the size is %d, set a TTL too", o.HistorySize))
	case o.HistoryTTL > 0 && o.HistorySize == 0:
		bad("HistorySize", o.HistorySize, fmt.Sprintf("history needs both a size and a TTL: the TTL is %v, set a size too", o.HistoryTTL))
	}
	history := o.HistorySize > 0 && o.HistoryTTL > 0
	meta := o.HistoryMetaTTL
	if meta == 0 {
		meta = broker.DefaultHistoryMetaTTL
	}
	if history && o.HistoryTTL > meta {
		bad("HistoryTTL", o.HistoryTTL, fmt.Sprintf("must not be longer than the history meta TTL (%v), which keeps a stream's position", meta))
	}
	if !history {
		for _, f := range []struct {
			field string
			on    bool
		}{{"ForceRecovery", o.ForceRecovery}, {"AllowRecovery", o.AllowRecovery}, {"ForcePositioning", o.ForcePositioning}, {"AllowPositioning", o.AllowPositioning}} {
			if f.on {
				bad(f.field, true, "needs history: set a history size and TTL")
			}
		}
	}
	if o.ChannelRegex != "" {
		if _, err := regexp.Compile(o.ChannelRegex); err != nil {
			bad("ChannelRegex", fmt.Sprintf("%q", o.ChannelRegex), "not a valid regular expression: "+err.Error())
		}
	}
	return errs
}
