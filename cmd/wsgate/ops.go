package main

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
)

// applyOps turns the operations settings in fc into o's server config:
// metrics, the admin address and page, the profiler and TLS.
func (o *options) applyOps(fc *fileConfig, sources map[string]source, bad func(flagName string, value any, reason string)) {
	c := &o.server
	c.DisableMetrics = !defaultTo(fc.Prometheus.Enabled, true)
	c.Admin = deref(fc.Admin.Enabled)
	c.AdminPassword = deref(fc.Admin.Password)
	c.Pprof = deref(fc.Debug.Enabled)

	h := fc.HTTPServer
	switch {
	case h.InternalPort != nil && *h.InternalPort != 0:
		host := deref(h.InternalAddress) // empty: the server listens on 127.0.0.1
		if *h.InternalPort < 0 || *h.InternalPort > 65535 {
			bad("admin-addr", *h.InternalPort, "the port must be a number from 1 to 65535")
		} else {
			c.AdminAddr = net.JoinHostPort(host, strconv.Itoa(*h.InternalPort))
		}
	case deref(h.InternalAddress) != "":
		bad("admin-addr", net.JoinHostPort(*h.InternalAddress, strconv.Itoa(deref(h.InternalPort))),
			"an admin address needs a port (http_server.internal_port)")
	}

	t := h.TLS
	if t.Enabled != nil && !*t.Enabled {
		return // http_server.tls.enabled: false turns TLS off, files or not
	}
	c.TLSCertFile = o.tlsPath("tls-cert", deref(t.CertPEM), sources, bad)
	c.TLSKeyFile = o.tlsPath("tls-key", deref(t.KeyPEM), sources, bad)
	if deref(t.Enabled) && (c.TLSCertFile == "" || c.TLSKeyFile == "") {
		bad("tls-cert", `""`, "http_server.tls.enabled is true: set both http_server.tls.cert_pem and key_pem (-tls-cert, -tls-key)")
	}
}

// tlsPath returns the file a TLS setting names: relative to the config
// file's directory when the file set it. PEM text is refused: the server
// reloads the files when they change, so it needs their paths.
func (o *options) tlsPath(flagName, v string, sources map[string]source, bad func(string, any, string)) string {
	if v == "" {
		return ""
	}
	if strings.Contains(v, "-----BEGIN") {
		bad(flagName, abbreviate(v), "give the PEM file's path, not its text")
		return ""
	}
	if src := sources[flagName]; src.where != "" && !filepath.IsAbs(v) && o.configFile != "" {
		v = filepath.Join(filepath.Dir(o.configFile), v)
	}
	return v
}
