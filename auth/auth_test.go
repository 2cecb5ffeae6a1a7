package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/wsgate/wsgate/hub"
)

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func keys(t *testing.T) (*rsa.PrivateKey, *ecdsa.PrivateKey) {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return rk, ek
}

func TestVerifyConnectTokens(t *testing.T) {
	rk, ek := keys(t)
	v, err := New(Config{HMACSecret: "secret", RSAPublicKey: &rk.PublicKey, ECDSAPublicKey: &ek.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	claims := jwt.MapClaims{"sub": "42", "exp": exp, "info": map[string]any{"name": "Ann"}, "channels": []string{"news", "chat:1"}}
	for _, tc := range []struct {
		name   string
		method jwt.SigningMethod
		key    any
	}{
		{"HS256", jwt.SigningMethodHS256, []byte("secret")},
		{"HS512", jwt.SigningMethodHS512, []byte("secret")},
		{"RS256", jwt.SigningMethodRS256, rk},
		{"ES256", jwt.SigningMethodES256, ek},
	} {
		ct, err := v.VerifyConnectToken(sign(t, tc.method, tc.key, claims))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if ct.UserID != "42" || ct.ExpireAt != exp || string(ct.Info) != `{"name":"Ann"}` || strings.Join(ct.Channels, ",") != "news,chat:1" {
			t.Fatalf("%s: %+v", tc.name, ct)
		}
	}
	// b64info, expire_at, subs.
	ct, err := v.VerifyConnectToken(sign(t, jwt.SigningMethodHS256, []byte("secret"), jwt.MapClaims{
		"sub": "u", "exp": exp, "expire_at": 0, "b64info": "AAEC",
		"channels": []string{"ignored"},
		"subs":     map[string]any{"news": map[string]any{"info": map[string]any{"a": 1}, "b64data": "AQ==", "override": map[string]any{"presence": map[string]any{"value": true}}}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	if ct.ExpireAt != 0 || string(ct.Info) != "\x00\x01\x02" || ct.Channels != nil || len(ct.Subs) != 1 {
		t.Fatalf("claims %+v", ct)
	}
	s := ct.Subs["news"]
	if string(s.Info) != `{"a":1}` || string(s.Data) != "\x01" || s.Override.Presence == nil || !*s.Override.Presence || s.Override.JoinLeave != nil {
		t.Fatalf("subs %+v", s)
	}
}

func TestRefusedTokens(t *testing.T) {
	rk, ek := keys(t)
	v, err := New(Config{HMACSecret: "secret", RSAPublicKey: &rk.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	good := sign(t, jwt.SigningMethodHS256, []byte("secret"), jwt.MapClaims{"sub": "1"})
	parts := strings.Split(good, ".")
	pubDER, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "1"}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	cases := []struct {
		name    string
		token   string
		expired bool
	}{
		{"expired", sign(t, jwt.SigningMethodHS256, []byte("secret"), jwt.MapClaims{"sub": "1", "exp": time.Now().Add(-time.Minute).Unix()}), true},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, []byte("secret"), jwt.MapClaims{"sub": "1", "nbf": time.Now().Add(time.Hour).Unix()}), true},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("other"), jwt.MapClaims{"sub": "1"}), false},
		{"tampered", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"2"}`)) + "." + parts[2], false},
		{"alg none", none, false},
		{"ES256 without an ECDSA key", sign(t, jwt.SigningMethodES256, ek, jwt.MapClaims{"sub": "1"}), false},
		{"HS256 keyed with the RSA public key", sign(t, jwt.SigningMethodHS256, pubPEM, jwt.MapClaims{"sub": "1"}), false},
		{"expired and tampered", sign(t, jwt.SigningMethodHS256, []byte("other"), jwt.MapClaims{"sub": "1", "exp": 1}), false},
		{"garbage", "not.a.token", false},
		{"channel claim", sign(t, jwt.SigningMethodHS256, []byte("secret"), jwt.MapClaims{"sub": "1", "channel": "x"}), false},
		{"bad b64info", sign(t, jwt.SigningMethodHS256, []byte("secret"), jwt.MapClaims{"sub": "1", "b64info": "!!"}), false},
	}
	for _, tc := range cases {
		_, err := v.VerifyConnectToken(tc.token)
		want := hub.ErrInvalidToken
		if tc.expired {
			want = hub.ErrTokenExpired
		}
		if !errors.Is(err, want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, want)
		}
	}
	if _, err := New(Config{}); !errors.Is(err, ErrNoKeys) {
		t.Fatalf("no keys: %v", err)
	}
	// The HMAC secret that happens to be the RSA key's PEM does not help
	// when HMAC is enabled with another secret either.
	v2, _ := New(Config{RSAPublicKey: &rk.PublicKey})
	if _, err := v2.VerifyConnectToken(sign(t, jwt.SigningMethodHS256, pubPEM, jwt.MapClaims{"sub": "1"})); !errors.Is(err, hub.ErrInvalidToken) {
		t.Fatalf("algorithm confusion: %v", err)
	}
}

func TestAudienceAndIssuer(t *testing.T) {
	v, _ := New(Config{HMACSecret: "s", Audience: "app", Issuer: "me"})
	ok := sign(t, jwt.SigningMethodHS256, []byte("s"), jwt.MapClaims{"sub": "1", "aud": "app", "iss": "me"})
	if _, err := v.VerifyConnectToken(ok); err != nil {
		t.Fatal(err)
	}
	for _, c := range []jwt.MapClaims{{"sub": "1", "aud": "other", "iss": "me"}, {"sub": "1", "aud": "app", "iss": "you"}, {"sub": "1"}} {
		if _, err := v.VerifyConnectToken(sign(t, jwt.SigningMethodHS256, []byte("s"), c)); !errors.Is(err, hub.ErrInvalidToken) {
			t.Errorf("%v: %v", c, err)
		}
	}
}

func TestVerifySubscribeTokens(t *testing.T) {
	v, _ := New(Config{HMACSecret: "s"})
	exp := time.Now().Add(time.Hour).Unix()
	st, err := v.VerifySubscribeToken(sign(t, jwt.SigningMethodHS256, []byte("s"), jwt.MapClaims{
		"sub": "u", "channel": "$room", "client": "c1", "exp": exp, "info": map[string]int{"x": 1}, "data": "hello",
		"override": map[string]any{"join_leave": map[string]bool{"value": false}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	if st.UserID != "u" || st.Channel != "$room" || st.Client != "c1" || st.ExpireAt != exp || string(st.Info) != `{"x":1}` || string(st.Data) != `"hello"` ||
		st.Override.JoinLeave == nil || *st.Override.JoinLeave {
		t.Fatalf("%+v", st)
	}
	if _, err := v.VerifySubscribeToken(sign(t, jwt.SigningMethodHS256, []byte("s"), jwt.MapClaims{"sub": "u"})); !errors.Is(err, hub.ErrInvalidToken) {
		t.Fatalf("no channel: %v", err)
	}
	if _, err := v.VerifySubscribeToken(sign(t, jwt.SigningMethodHS256, []byte("s"), jwt.MapClaims{"channel": "x", "exp": 1})); !errors.Is(err, hub.ErrTokenExpired) {
		t.Fatalf("expired: %v", err)
	}
}

func TestParsePEM(t *testing.T) {
	rk, ek := keys(t)
	der, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	k, err := ParseRSAPublicKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil || !k.Equal(&rk.PublicKey) {
		t.Fatalf("RSA: %v", err)
	}
	der, _ = x509.MarshalPKIXPublicKey(&ek.PublicKey)
	e, err := ParseECDSAPublicKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil || !e.Equal(&ek.PublicKey) {
		t.Fatalf("ECDSA: %v", err)
	}
	if _, err := ParseRSAPublicKeyPEM([]byte("nope")); err == nil {
		t.Fatal("garbage RSA key accepted")
	}
	if _, err := ParseECDSAPublicKeyPEM([]byte("nope")); err == nil {
		t.Fatal("garbage ECDSA key accepted")
	}
}
