package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"

	"github.com/wsgate/wsgate/broker/natsbroker"
	"github.com/wsgate/wsgate/internal/server"
)

// The broker's settings: cluster mode on NATS (docs/cluster.md). -broker
// picks the in-memory broker or NATS servers; -cluster-embedded runs a NATS
// server inside the process instead. Their keys live in the file's broker
// section; broker.type and broker.nats.url follow Centrifugo v6, the rest
// is ours.

// brokerSection is the config file's broker section.
type brokerSection struct {
	// Type is "memory" or "nats"; unset, it is nats when NATS.URL is set.
	Type     *string         `yaml:"type" json:"type"`
	NATS     natsSection     `yaml:"nats" json:"nats"`
	Embedded embeddedSection `yaml:"embedded" json:"embedded"`
}

// natsSection is the broker's connection to NATS.
type natsSection struct {
	// URL is a comma-separated list of server URLs; the passwords of URLs
	// with credentials are masked by -print-config.
	URL             *string        `yaml:"url" json:"url" secret:"url"`
	Name            *string        `yaml:"name" json:"name"`
	Prefix          *string        `yaml:"prefix" json:"prefix"`
	Replicas        *int           `yaml:"replicas" json:"replicas"`
	CredentialsFile *string        `yaml:"credentials_file" json:"credentials_file"`
	Token           *string        `yaml:"token" json:"token" secret:"true"`
	User            *string        `yaml:"user" json:"user"`
	Password        *string        `yaml:"password" json:"password" secret:"true"`
	TLS             natsTLSSection `yaml:"tls" json:"tls"`
}

// natsTLSSection holds PEM text, or the paths of PEM files (relative to
// the config file), as Centrifugo's tls sections do.
type natsTLSSection struct {
	ServerCAPEM *string `yaml:"server_ca_pem" json:"server_ca_pem"`
	CertPEM     *string `yaml:"cert_pem" json:"cert_pem"`
	KeyPEM      *string `yaml:"key_pem" json:"key_pem" secret:"true"`
}

// embeddedSection is -cluster-embedded and its options.
type embeddedSection struct {
	Enabled          *bool    `yaml:"enabled" json:"enabled"`
	Name             *string  `yaml:"name" json:"name"`
	ClusterName      *string  `yaml:"cluster_name" json:"cluster_name"`
	ClusterAddress   *string  `yaml:"cluster_address" json:"cluster_address"`
	ClusterAdvertise *string  `yaml:"cluster_advertise" json:"cluster_advertise"`
	Routes           []string `yaml:"routes" json:"routes"`
	StoreDir         *string  `yaml:"store_dir" json:"store_dir"`
	ClusterUser      *string  `yaml:"cluster_user" json:"cluster_user"`
	ClusterPassword  *string  `yaml:"cluster_password" json:"cluster_password" secret:"true"`
	ClientAddress    *string  `yaml:"client_address" json:"client_address"`
	SyncAlways       *bool    `yaml:"sync_always" json:"sync_always"`
}

const (
	brokerTypeMemory = "memory"
	brokerTypeNATS   = "nats"
)

// brokerSettings are the broker's flags, in -help's order; init puts them
// before -log-format.
var brokerSettings = []setting{
	{flag: "broker", key: "broker.type, broker.nats.url", field: "Cluster.NATS.URLs", typ: "urls", def: brokerTypeMemory,
		usage: "`memory` (one node), or comma-separated NATS server URLs (nats://host:4222,...) to run several nodes as one cluster on NATS with JetStream; see docs/cluster.md",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return brokerFlag{&fc.Broker.Type, &fc.Broker.NATS.URL} }},
	{flag: "broker-name", key: "broker.nats.name", field: "Cluster.NATS.Name", typ: "name", def: server.DefaultNATSName,
		usage: "the NATS connection's `name`, shown by NATS monitoring",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Broker.NATS.Name} }},
	{flag: "broker-prefix", key: "broker.nats.prefix", field: "Cluster.NATS.Prefix", typ: "prefix", def: server.DefaultNATSPrefix,
		usage: "`prefix` of the broker's NATS subjects and streams (letters, digits, - and _), so that several wsgate clusters can share a NATS system; the same on every node",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Broker.NATS.Prefix} }},
	{flag: "broker-replicas", key: "broker.nats.replicas", field: "Cluster.NATS.Replicas", typ: "int", def: "0",
		usage: "NATS servers that keep a copy of history and presence (1 to 5); 0: 3 when there are three NATS servers or more (URLs, or embedded routes), else 1; the same on every node",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return intFlag{&fc.Broker.NATS.Replicas} }},
	{flag: "broker-credentials", key: "broker.nats.credentials_file", field: "Cluster.NATS.CredentialsFile", typ: "file",
		usage: "NATS credentials `file` (.creds: user JWT and NKey seed)",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Broker.NATS.CredentialsFile} }},
	{flag: "broker-token", key: "broker.nats.token", field: "Cluster.NATS.Token", typ: "secret",
		usage: "NATS authentication `token`; prefer the environment or the file, since a flag shows in ps",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Broker.NATS.Token} }},
	{flag: "broker-user", key: "broker.nats.user", field: "Cluster.NATS.User", typ: "user",
		usage: "NATS `user` name, with -broker-password",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Broker.NATS.User} }},
	{flag: "broker-password", key: "broker.nats.password", field: "Cluster.NATS.Password", typ: "secret",
		usage: "NATS `password`, with -broker-user; prefer the environment or the file",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Broker.NATS.Password} }},
	{flag: "broker-tls-ca", key: "broker.nats.tls.server_ca_pem", field: "Cluster.NATS.TLSConfig", typ: "file",
		usage: "PEM `file` of the CAs that sign the NATS servers' certificates; turns TLS on (tls:// URLs turn it on with the system's CAs)",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Broker.NATS.TLS.ServerCAPEM} }},
	{flag: "broker-tls-cert", key: "broker.nats.tls.cert_pem", field: "Cluster.NATS.TLSConfig", typ: "file",
		usage: "PEM `file` of a client certificate, for NATS servers that verify clients (with -broker-tls-key)",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Broker.NATS.TLS.CertPEM} }},
	{flag: "broker-tls-key", key: "broker.nats.tls.key_pem", field: "Cluster.NATS.TLSConfig", typ: "file",
		usage: "PEM `file` of the client certificate's private key",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Broker.NATS.TLS.KeyPEM} }},
	{flag: "cluster-embedded", key: "broker.embedded.enabled", field: "Cluster.Embedded", def: "false",
		usage: "run a NATS server with JetStream inside this process and the broker on it: with -cluster-addr and -cluster-routes, three wsgate processes form a cluster with nothing else installed; alone, a single node whose history survives restarts",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return boolFlag{&fc.Broker.Embedded.Enabled} }},
	{flag: "cluster-node-name", key: "broker.embedded.name", field: "Cluster.Embedded.Name", typ: "name",
		usage: "the embedded NATS server's `name`: unique in the cluster and stable across restarts; default wsgate-HOST-PORT of -cluster-addr (wsgate when alone)",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Broker.Embedded.Name} }},
	{flag: "cluster-name", key: "broker.embedded.cluster_name", field: "Cluster.Embedded.ClusterName", typ: "name", def: server.DefaultClusterName,
		usage: "the embedded NATS cluster's `name`, the same on every node",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Broker.Embedded.ClusterName} }},
	{flag: "cluster-addr", key: "broker.embedded.cluster_address", field: "Cluster.Embedded.ClusterAddr", typ: "address",
		usage: "`host:port` where the embedded NATS server accepts the other nodes' routes, e.g. 0.0.0.0:6222; needs -cluster-routes; empty: a standalone server",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Broker.Embedded.ClusterAddress} }},
	{flag: "cluster-advertise", key: "broker.embedded.cluster_advertise", field: "Cluster.Embedded.ClusterAdvertise", typ: "address",
		usage: "`host:port` the other nodes dial to reach this one, when -cluster-addr is a wildcard address",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value {
			return stringPtrFlag{&fc.Broker.Embedded.ClusterAdvertise}
		}},
	{flag: "cluster-routes", key: "broker.embedded.routes", field: "Cluster.Embedded.Routes", typ: "addresses",
		usage: "comma-separated cluster `addresses` (host:port) of the nodes; this node's own may be listed, so every node can be given the same list",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return (*listFlag)(&fc.Broker.Embedded.Routes) }},
	{flag: "cluster-store-dir", key: "broker.embedded.store_dir", field: "Cluster.Embedded.StoreDir", typ: "dir",
		usage: "`directory` where the embedded server keeps JetStream's data (history survives restarts only if it does); default TMPDIR/wsgate-nats/NAME",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Broker.Embedded.StoreDir} }},
	{flag: "cluster-user", key: "broker.embedded.cluster_user", field: "Cluster.Embedded.ClusterUser", typ: "user",
		usage: "`user` name the nodes' routes authenticate with, with -cluster-password",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Broker.Embedded.ClusterUser} }},
	{flag: "cluster-password", key: "broker.embedded.cluster_password", field: "Cluster.Embedded.ClusterPassword", typ: "secret",
		usage: "`password` of the nodes' routes; prefer the environment or the file",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value {
			return stringPtrFlag{&fc.Broker.Embedded.ClusterPassword}
		}},
	{flag: "cluster-client-addr", key: "broker.embedded.client_address", field: "Cluster.Embedded.ClientAddr", typ: "address",
		usage: "`host:port` where the embedded server also accepts NATS clients, such as the nats CLI; default: none (a clustered server listens on a free loopback port it does not advertise)",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Broker.Embedded.ClientAddress} }},
	{flag: "cluster-sync-always", key: "broker.embedded.sync_always", field: "Cluster.Embedded.SyncAlways", def: "false",
		usage: "sync every JetStream write to disk before acknowledging it (slower; by default files are synced every two minutes)",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return boolFlag{&fc.Broker.Embedded.SyncAlways} }},
}

func init() {
	// The broker's flags come before the logging flags in -help.
	i := slices.IndexFunc(settings, func(s setting) bool { return s.flag == "log-format" })
	if i < 0 {
		i = len(settings)
	}
	settings = slices.Insert(settings, i, brokerSettings...)
}

// brokerFlag is -broker: "memory", or NATS URLs, stored as the broker
// section's type and URL.
type brokerFlag struct{ typ, url **string }

func (f brokerFlag) Set(s string) error {
	s = strings.TrimSpace(s)
	if s == "" {
		return errors.New("want memory or NATS URLs")
	}
	if strings.EqualFold(s, brokerTypeMemory) {
		t := brokerTypeMemory
		*f.typ = &t
		return nil
	}
	t := brokerTypeNATS
	*f.typ, *f.url = &t, &s
	return nil
}

func (f brokerFlag) String() string {
	if f.typ == nil || *f.typ == nil {
		return ""
	}
	if **f.typ == brokerTypeNATS && *f.url != nil {
		return server.RedactURLs(**f.url)
	}
	return **f.typ
}

func (f brokerFlag) isSet() bool { return f.typ != nil && (*f.typ != nil || *f.url != nil) }

// applyBroker turns the broker section into o's cluster configuration.
// bad reports an invalid setting by its flag; what the server checks
// itself (URLs, addresses, replicas) is reported by apply.
func (o *options) applyBroker(fc *fileConfig, bad func(flagName string, value any, reason string)) {
	b := fc.Broker
	c := &o.server
	c.Cluster = server.ClusterConfig{}
	typ := deref(b.Type)
	url := strings.TrimSpace(deref(b.NATS.URL))
	switch typ {
	case "", brokerTypeMemory, brokerTypeNATS:
	default:
		bad("broker", fmt.Sprintf("type %q", typ), "want memory or nats")
		return
	}
	embedded := deref(b.Embedded.Enabled)
	useNATS := typ == brokerTypeNATS || typ == "" && url != ""
	switch {
	case embedded && useNATS && url != "":
		bad("cluster-embedded", true, "NATS URLs are set too (-broker): the embedded server replaces them; use one or the other")
		return
	case !embedded && useNATS && url == "":
		bad("broker", brokerTypeNATS, "needs the NATS servers' URLs (-broker nats://host:4222, or broker.nats.url), or -cluster-embedded")
		return
	case !embedded && !useNATS:
		return // the in-memory broker: the NATS settings are unused
	}

	n := natsbroker.Options{
		Name:     deref(b.NATS.Name),
		Prefix:   deref(b.NATS.Prefix),
		Replicas: deref(b.NATS.Replicas),
	}
	if n.Replicas < 0 {
		bad("broker-replicas", n.Replicas, "must be 0 (automatic) or from 1 to 5")
		n.Replicas = 0
	}
	tlsFiles := b.NATS.TLS
	connection := []struct {
		flag, value string
	}{
		{"broker-credentials", deref(b.NATS.CredentialsFile)},
		{"broker-token", deref(b.NATS.Token)},
		{"broker-user", deref(b.NATS.User)},
		{"broker-password", deref(b.NATS.Password)},
		{"broker-tls-ca", deref(tlsFiles.ServerCAPEM)},
		{"broker-tls-cert", deref(tlsFiles.CertPEM)},
		{"broker-tls-key", deref(tlsFiles.KeyPEM)},
	}
	if embedded {
		for _, s := range connection {
			if s.value != "" {
				bad(s.flag, "(set)", "-cluster-embedded connects the broker to its own NATS server in process, without credentials or TLS")
			}
		}
		e := b.Embedded
		c.Cluster.Embedded = &natsbroker.EmbeddedOptions{
			Name:             deref(e.Name),
			ClusterName:      deref(e.ClusterName),
			ClusterAddr:      deref(e.ClusterAddress),
			ClusterAdvertise: deref(e.ClusterAdvertise),
			Routes:           e.Routes,
			StoreDir:         deref(e.StoreDir),
			ClusterUser:      deref(e.ClusterUser),
			ClusterPassword:  deref(e.ClusterPassword),
			ClientAddr:       deref(e.ClientAddress),
			SyncAlways:       deref(e.SyncAlways),
		}
		c.Cluster.NATS = n
		return
	}
	n.URLs = url
	n.CredentialsFile = deref(b.NATS.CredentialsFile)
	n.Token = deref(b.NATS.Token)
	n.User, n.Password = deref(b.NATS.User), deref(b.NATS.Password)
	if err := o.natsTLS(&n, tlsFiles, bad); err != nil {
		return
	}
	c.Cluster.NATS = n
}

// natsTLS sets n's TLS configuration from the section's PEM settings
// (text, or files relative to the config file); it keeps what was given
// for -print-config.
func (o *options) natsTLS(n *natsbroker.Options, s natsTLSSection, bad func(string, any, string)) error {
	ca, cert, key := deref(s.ServerCAPEM), deref(s.CertPEM), deref(s.KeyPEM)
	if ca == "" && cert == "" && key == "" {
		return nil
	}
	var failed error
	read := func(flagName, v string, i int) []byte {
		if v == "" {
			return nil
		}
		pem, given, err := o.readPEM(v)
		o.brokerTLS[i] = given
		if err != nil {
			bad(flagName, abbreviate(v), err.Error())
			failed = err
		}
		return pem
	}
	caPEM, certPEM, keyPEM := read("broker-tls-ca", ca, 0), read("broker-tls-cert", cert, 1), read("broker-tls-key", key, 2)
	if failed != nil {
		return failed
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caPEM != nil {
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(caPEM) {
			failed = errors.New("no certificate in it")
			bad("broker-tls-ca", abbreviate(ca), "no PEM certificate in it")
		}
	}
	switch {
	case (certPEM == nil) != (keyPEM == nil):
		failed = errors.New("half a key pair")
		bad("broker-tls-cert", abbreviate(cert), "a client certificate needs its key (-broker-tls-key), and a key its certificate")
	case certPEM != nil:
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			failed = err
			bad("broker-tls-cert", abbreviate(cert), "with -broker-tls-key: "+err.Error())
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if failed == nil {
		n.TLSConfig = cfg
	}
	return failed
}

// brokerFileConfig returns the broker section of the effective
// configuration c, as -print-config shows it: the mode, and every setting
// with its default.
func brokerFileConfig(c server.Config, o options) brokerSection {
	n := c.Cluster.NATS
	e := natsbroker.EmbeddedOptions{ClusterName: server.DefaultClusterName}
	typ := brokerTypeMemory
	enabled := false
	if n.Name == "" {
		n.Name = server.DefaultNATSName
	}
	if n.Prefix == "" {
		n.Prefix = server.DefaultNATSPrefix
	}
	if c.Cluster.Embedded != nil {
		e, enabled = *c.Cluster.Embedded, true
	}
	if enabled || n.URLs != "" {
		typ = brokerTypeNATS
	}
	str := func(s string) *string { return &s }
	routes := e.Routes
	if routes == nil {
		routes = []string{}
	}
	return brokerSection{
		Type: &typ,
		NATS: natsSection{
			URL:             str(n.URLs),
			Name:            str(n.Name),
			Prefix:          str(n.Prefix),
			Replicas:        &n.Replicas,
			CredentialsFile: str(n.CredentialsFile),
			Token:           str(n.Token),
			User:            str(n.User),
			Password:        str(n.Password),
			TLS: natsTLSSection{
				ServerCAPEM: str(o.brokerTLS[0]),
				CertPEM:     str(o.brokerTLS[1]),
				KeyPEM:      str(o.brokerTLS[2]),
			},
		},
		Embedded: embeddedSection{
			Enabled:          &enabled,
			Name:             str(e.Name),
			ClusterName:      str(e.ClusterName),
			ClusterAddress:   str(e.ClusterAddr),
			ClusterAdvertise: str(e.ClusterAdvertise),
			Routes:           routes,
			StoreDir:         str(e.StoreDir),
			ClusterUser:      str(e.ClusterUser),
			ClusterPassword:  str(e.ClusterPassword),
			ClientAddress:    str(e.ClientAddr),
			SyncAlways:       &e.SyncAlways,
		},
	}
}
