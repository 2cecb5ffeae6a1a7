package pubsub

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// recorder is a Session that records what the protocol asked of it.
type recorder struct {
	log []string
}

func (r *recorder) Reply(frame []byte)       { r.log = append(r.log, "reply "+string(frame)) }
func (r *recorder) Subscribe(channel string) { r.log = append(r.log, "subscribe "+channel) }
func (r *recorder) Publish(channel string, push []byte) {
	r.log = append(r.log, "publish "+channel+" "+string(push))
}

func TestHandleFrame(t *testing.T) {
	frame := strings.Join([]string{
		`{"id":1,"connect":{"name":"test"}}`,
		`{"id":2,"subscribe":{"channel":"news"}}`,
		`{"id":3,"publish":{"channel":"news","data":{"text":"hi"}}}`,
		`{}`,
		`{"id":4,"presence":{"channel":"news"}}`,
	}, "\n")
	var r recorder
	if err := HandleFrame([]byte(frame), &r); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`reply {"id":1,"connect":{"client":"` + "*" + `","version":"0.0.0-bench"}}`,
		`subscribe news`,
		`reply {"id":2,"subscribe":{}}`,
		`publish news {"push":{"channel":"news","pub":{"data":{"text":"hi"}}}}`,
		`reply {"id":3,"publish":{}}`,
		`reply {"id":4,"error":{"code":104,"message":"method not found"}}`,
	}
	if len(r.log) != len(want) {
		t.Fatalf("got %d actions, want %d:\n%s", len(r.log), len(want), strings.Join(r.log, "\n"))
	}
	for i, w := range want {
		pre, post, _ := strings.Cut(w, "*")
		if !strings.HasPrefix(r.log[i], pre) || !strings.HasSuffix(r.log[i], post) {
			t.Errorf("action %d: got %s, want %s", i, r.log[i], w)
		}
	}
}

func TestHandleFrameMalformed(t *testing.T) {
	var r recorder
	err := HandleFrame([]byte("{\"id\":1,\"connect\":{}}\n{\"id\":"), &r)
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("error %v, want ErrMalformed", err)
	}
	if len(r.log) != 1 {
		t.Errorf("the command before the bad one did not run: %q", r.log)
	}
}

func TestAPIHandler(t *testing.T) {
	var got []string
	srv := httptest.NewServer(APIHandler("k", func(channel string, push []byte) {
		got = append(got, channel+" "+string(push))
	}))
	defer srv.Close()
	post := func(key, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
		if key != "" {
			req.Header.Set("X-API-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	if code, _ := post("", `{"channel":"a","data":1}`); code != http.StatusUnauthorized {
		t.Errorf("no key: HTTP %d", code)
	}
	if code, body := post("k", `{"channel":"a","data":"x"}`); code != 200 || body != `{"result":{}}` {
		t.Errorf("publish: HTTP %d %s", code, body)
	}
	if code, body := post("k", `{"channel":"a"`); code != 200 || !strings.Contains(body, `"code":107`) {
		t.Errorf("malformed: HTTP %d %s", code, body)
	}
	if len(got) != 1 || got[0] != `a {"push":{"channel":"a","pub":{"data":"x"}}}` {
		t.Errorf("published %q", got)
	}
}
