// Package auth verifies Centrifugo's JWT connection and subscription
// tokens (HS256/384/512 with a shared secret, RS256/384/512 and
// ES256/384/512 with public keys), with github.com/golang-jwt/jwt/v5.
//
// A Verifier is a hub.TokenVerifier: set it as hub.Config.Tokens. Its
// errors wrap hub.ErrTokenExpired (the token's exp or nbf says it is not
// valid now) or hub.ErrInvalidToken (anything else: bad signature, an
// algorithm with no key configured, malformed claims), which the hub turns
// into Centrifugo's codes (109 token expired; 3500 invalid token).
//
// Claims, as Centrifugo reads them. Connection tokens: sub (user ID), exp,
// nbf, iat, aud and iss (checked when configured), expire_at (connection
// expiry overriding exp; 0 for none), info or b64info (connection info),
// channels (server-side subscriptions), subs (server-side subscriptions
// with info, b64info, data, b64data and override), and channel must be
// absent. Subscription tokens: sub, channel (required), client, exp, nbf,
// expire_at, info or b64info, data or b64data, override.
package auth

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
	"github.com/wsgate/wsgate/hub"
)

// Config holds the keys a Verifier accepts. At least one must be set.
type Config struct {
	// HMACSecret enables HS256, HS384 and HS512.
	HMACSecret string
	// RSAPublicKey enables RS256, RS384 and RS512.
	RSAPublicKey *rsa.PublicKey
	// ECDSAPublicKey enables ES256, ES384 and ES512.
	ECDSAPublicKey *ecdsa.PublicKey
	// Audience and Issuer, when set, must match the token's aud and iss.
	Audience string
	Issuer   string
}

// Verifier verifies tokens. It is safe for concurrent use.
type Verifier struct {
	cfg     Config
	methods []string
	parser  *jwt.Parser
}

var _ hub.TokenVerifier = (*Verifier)(nil)

// ErrNoKeys means a Config without any key.
var ErrNoKeys = errors.New("auth: no token key configured")

// New returns a Verifier for cfg.
func New(cfg Config) (*Verifier, error) {
	v := &Verifier{cfg: cfg}
	if cfg.HMACSecret != "" {
		v.methods = append(v.methods, "HS256", "HS384", "HS512")
	}
	if cfg.RSAPublicKey != nil {
		v.methods = append(v.methods, "RS256", "RS384", "RS512")
	}
	if cfg.ECDSAPublicKey != nil {
		v.methods = append(v.methods, "ES256", "ES384", "ES512")
	}
	if len(v.methods) == 0 {
		return nil, ErrNoKeys
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(v.methods)}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// key returns the verification key for the token's algorithm.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if v.cfg.HMACSecret != "" {
			return []byte(v.cfg.HMACSecret), nil
		}
	case *jwt.SigningMethodRSA:
		if v.cfg.RSAPublicKey != nil {
			return v.cfg.RSAPublicKey, nil
		}
	case *jwt.SigningMethodECDSA:
		if v.cfg.ECDSAPublicKey != nil {
			return v.cfg.ECDSAPublicKey, nil
		}
	}
	return nil, fmt.Errorf("no key for %s", t.Method.Alg())
}

// parse verifies the signature, then the registered claims.
func (v *Verifier) parse(token string, claims jwt.Claims) error {
	_, err := v.parser.ParseWithClaims(token, claims, v.key)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jwt.ErrTokenExpired), errors.Is(err, jwt.ErrTokenNotValidYet):
		return fmt.Errorf("auth: %w: %w", hub.ErrTokenExpired, err)
	}
	return fmt.Errorf("auth: %w: %w", hub.ErrInvalidToken, err)
}

type boolValue struct {
	Value bool `json:"value"`
}

type override struct {
	Presence           *boolValue `json:"presence,omitempty"`
	JoinLeave          *boolValue `json:"join_leave,omitempty"`
	ForcePushJoinLeave *boolValue `json:"force_push_join_leave,omitempty"`
	ForcePositioning   *boolValue `json:"force_positioning,omitempty"`
	ForceRecovery      *boolValue `json:"force_recovery,omitempty"`
}

func (o *override) toHub() hub.Override {
	var out hub.Override
	if o == nil {
		return out
	}
	get := func(b *boolValue) *bool {
		if b == nil {
			return nil
		}
		v := b.Value
		return &v
	}
	out.Presence, out.JoinLeave, out.ForcePushJoinLeave = get(o.Presence), get(o.JoinLeave), get(o.ForcePushJoinLeave)
	out.ForcePositioning, out.ForceRecovery = get(o.ForcePositioning), get(o.ForceRecovery)
	return out
}

// subOptions are the per-subscription claims of both token kinds.
type subOptions struct {
	Info     json.RawMessage `json:"info,omitempty"`
	B64Info  string          `json:"b64info,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	B64Data  string          `json:"b64data,omitempty"`
	Override *override       `json:"override,omitempty"`
}

func (o *subOptions) decode() (info, data []byte, err error) {
	info, data = o.Info, o.Data
	if o.B64Info != "" {
		if info, err = base64.StdEncoding.DecodeString(o.B64Info); err != nil {
			return nil, nil, fmt.Errorf("auth: %w: b64info: %w", hub.ErrInvalidToken, err)
		}
	}
	if o.B64Data != "" {
		if data, err = base64.StdEncoding.DecodeString(o.B64Data); err != nil {
			return nil, nil, fmt.Errorf("auth: %w: b64data: %w", hub.ErrInvalidToken, err)
		}
	}
	return info, data, nil
}

type connectClaims struct {
	jwt.RegisteredClaims
	ExpireAt *int64                `json:"expire_at,omitempty"`
	Info     json.RawMessage       `json:"info,omitempty"`
	B64Info  string                `json:"b64info,omitempty"`
	Channels []string              `json:"channels,omitempty"`
	Subs     map[string]subOptions `json:"subs,omitempty"`
	Channel  string                `json:"channel,omitempty"`
}

// expireAt returns the connection's expiry: expire_at when present (0
// meaning none), else exp.
func expireAt(explicit *int64, exp *jwt.NumericDate) int64 {
	if explicit != nil {
		return max(*explicit, 0)
	}
	if exp != nil {
		return exp.Unix()
	}
	return 0
}

// VerifyConnectToken verifies a connection token.
func (v *Verifier) VerifyConnectToken(token string) (hub.ConnectToken, error) {
	var c connectClaims
	if err := v.parse(token, &c); err != nil {
		return hub.ConnectToken{}, err
	}
	if c.Channel != "" {
		return hub.ConnectToken{}, fmt.Errorf("auth: %w: a connection token has a channel claim", hub.ErrInvalidToken)
	}
	ct := hub.ConnectToken{
		UserID:   c.Subject,
		ExpireAt: expireAt(c.ExpireAt, c.ExpiresAt),
		Info:     c.Info,
		Channels: c.Channels,
	}
	if c.B64Info != "" {
		info, err := base64.StdEncoding.DecodeString(c.B64Info)
		if err != nil {
			return hub.ConnectToken{}, fmt.Errorf("auth: %w: b64info: %w", hub.ErrInvalidToken, err)
		}
		ct.Info = info
	}
	if len(c.Subs) > 0 {
		// As Centrifugo: subs, when present, replace channels.
		ct.Channels = nil
		ct.Subs = make(map[string]hub.TokenSubscription, len(c.Subs))
		for ch, o := range c.Subs {
			info, data, err := o.decode()
			if err != nil {
				return hub.ConnectToken{}, err
			}
			ct.Subs[ch] = hub.TokenSubscription{Info: info, Data: data, Override: o.Override.toHub()}
		}
	}
	return ct, nil
}

type subscribeClaims struct {
	jwt.RegisteredClaims
	subOptions
	Channel  string `json:"channel,omitempty"`
	Client   string `json:"client,omitempty"`
	ExpireAt *int64 `json:"expire_at,omitempty"`
}

// VerifySubscribeToken verifies a subscription token.
func (v *Verifier) VerifySubscribeToken(token string) (hub.SubscribeToken, error) {
	var c subscribeClaims
	if err := v.parse(token, &c); err != nil {
		return hub.SubscribeToken{}, err
	}
	if c.Channel == "" {
		return hub.SubscribeToken{}, fmt.Errorf("auth: %w: a subscription token needs a channel claim", hub.ErrInvalidToken)
	}
	info, data, err := c.decode()
	if err != nil {
		return hub.SubscribeToken{}, err
	}
	return hub.SubscribeToken{
		UserID:   c.Subject,
		Channel:  c.Channel,
		Client:   c.Client,
		ExpireAt: expireAt(c.ExpireAt, c.ExpiresAt),
		Info:     info,
		Data:     data,
		Override: c.Override.toHub(),
	}, nil
}

// ParseRSAPublicKeyPEM parses a PEM-encoded RSA public key (PKIX or
// PKCS#1, or a certificate).
func ParseRSAPublicKeyPEM(pem []byte) (*rsa.PublicKey, error) {
	k, err := jwt.ParseRSAPublicKeyFromPEM(pem)
	if err != nil {
		return nil, fmt.Errorf("auth: RSA public key: %w", err)
	}
	return k, nil
}

// ParseECDSAPublicKeyPEM parses a PEM-encoded ECDSA public key.
func ParseECDSAPublicKeyPEM(pem []byte) (*ecdsa.PublicKey, error) {
	k, err := jwt.ParseECPublicKeyFromPEM(pem)
	if err != nil {
		return nil, fmt.Errorf("auth: ECDSA public key: %w", err)
	}
	return k, nil
}
