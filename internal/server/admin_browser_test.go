package server

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/wsgate/wsgate"
)

// setAuthorization makes the tab send an Authorization header with every
// request, as a browser does once the user typed the password.
func setAuthorization(value string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if _, err := cdp.Call(ctx, t, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, t, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"Authorization": value},
		})
		return err
	})
}

// TestAdminBrowser opens the admin page in Chromium: refused without the
// password; with it, the figures, the top channels and the charts follow
// real traffic (clients connecting, subscribing and receiving
// publications), and a channel name made of HTML stays text.
func TestAdminBrowser(t *testing.T) {
	tab := browser(t)
	ts := startServerWith(t, adminConfig(), func(s *Server) { s.admin.every = 100 * time.Millisecond })
	page := "http://" + ts.AdminAddr().String() + "/admin/"

	// Without the password: headless Chromium, which cannot ask for it,
	// fails the navigation on the 401 challenge (or shows the 401 page).
	if err := chromedp.Do(tab, chromedp.Navigate(page)); err != nil {
		if !strings.Contains(err.Error(), "ERR_INVALID_AUTH_CREDENTIALS") {
			t.Fatalf("loading the page without the password: %v", err)
		}
	} else if body := eval[string](t, tab, `document.body.innerText`); !strings.Contains(body, "401") ||
		eval[bool](t, tab, `document.getElementById("connections") !== null`) {
		t.Fatalf("without the password the page showed %q", body)
	}

	do(t, tab, "loading the page with the password",
		setAuthorization(basicAuth(testAdminPassword)),
		chromedp.Navigate(page),
		chromedp.WaitVisible(chromedp.ID("connections")),
	)
	waitJS(t, tab, "the first figures", `document.getElementById("status").textContent.startsWith("live")`)
	if got := eval[string](t, tab, `document.getElementById("connections").textContent`); got != "0" {
		t.Fatalf("connections before any client: %q", got)
	}

	// Real traffic: three hub subscribers, one of them on a channel whose
	// name is HTML, and an echo client.
	const xss = `<img src=x onerror="window.__xss=1">`
	var subs []*hubClient
	for i := range 3 {
		sc := dialHub(t, ts)
		sc.connect("")
		sc.subscribe("news")
		if i == 0 {
			sc.subscribe(xss)
		}
		subs = append(subs, sc)
	}
	echoC := dial(t, ts.wsURL(), &wsgate.Options{PingInterval: -1})
	waitJS(t, tab, "4 connections", `document.getElementById("connections").textContent === "4"`)
	waitJS(t, tab, "4 subscribers", `document.getElementById("subscriptions").textContent === "4"`)
	waitJS(t, tab, "the top channels", `document.querySelectorAll("#top-channels tr").length === 2`)
	rows := eval[[]string](t, tab, `Array.from(document.querySelectorAll("#top-channels tr"), r => r.innerText)`)
	if !strings.HasPrefix(rows[0], "news\t3") || !strings.HasPrefix(rows[1], xss+"\t1") {
		t.Fatalf("top channels: %q", rows)
	}
	if eval[bool](t, tab, `window.__xss === 1 || document.querySelector("#top-channels img") !== null`) {
		t.Fatal("a channel name was rendered as HTML")
	}

	// Publications: the out rate and the deliveries move.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			// Not t's helpers: this is not the test's goroutine.
			req, _ := http.NewRequest(http.MethodPost, ts.httpURL()+"/api/publish",
				strings.NewReader(`{"channel":"news","data":{"n":`+strconv.Itoa(i)+`}}`))
			req.Header.Set("X-API-Key", testAPIKey)
			if res, err := http.DefaultClient.Do(req); err == nil {
				res.Body.Close()
			}
			echoC.Write(context.Background(), wsgate.TextMessage, []byte("ping "+strconv.Itoa(i)))
		}
	}()
	go func() {
		// Keep the subscribers and the echo client reading.
		for _, sc := range subs {
			go func() {
				for {
					if _, _, err := tryRead(sc.c, waitTimeout); err != nil {
						return
					}
				}
			}()
		}
		for {
			if _, _, err := tryRead(echoC, waitTimeout); err != nil {
				return
			}
		}
	}()
	waitJS(t, tab, "messages out per second", `parseFloat(document.getElementById("msgs-out-rate").textContent) > 0`)
	waitJS(t, tab, "messages in per second", `parseFloat(document.getElementById("msgs-in-rate").textContent) > 0`)
	waitJS(t, tab, "deliveries", `/[1-9]/.test(document.getElementById("publications").textContent)`)
	waitJS(t, tab, "a drawn chart", `document.querySelector("#chart-out polyline") !== null &&
		document.querySelector("#chart-out polyline").getAttribute("points").split(" ").length > 3`)
	close(stop)
	<-done

	// Clients leave: the figures follow.
	for _, sc := range subs {
		sc.c.Close()
		waitDone(t, sc.c)
	}
	waitJS(t, tab, "1 connection", `document.getElementById("connections").textContent === "1"`)
	waitJS(t, tab, "no channel left", `document.querySelector("#top-channels td").textContent === "no channel has subscribers"`)
	if node := eval[string](t, tab, `document.querySelector("#nodes tr").innerText`); !strings.Contains(node, "(this node)") {
		t.Fatalf("nodes table: %q", node)
	}
	if broker := eval[string](t, tab, `document.getElementById("broker-state").textContent`); broker != "up" {
		t.Fatalf("broker state: %q", broker)
	}
}
