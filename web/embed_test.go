package web

import (
	"io/fs"
	"strings"
	"testing"
)

func TestFS(t *testing.T) {
	for _, tt := range []struct {
		name string
		want []string
	}{
		{"index.html", []string{`src="app.js"`, `href="style.css"`, `value="Hello world!"`, `id="ps-output"`, `id="ps-token"`}},
		{"app.js", []string{"textContent", `binaryType = "arraybuffer"`, "ws://localhost:5555/ws", "ws://localhost:5555/connection/websocket"}},
		{"style.css", []string{"#output", "#ps-output"}},
	} {
		b, err := fs.ReadFile(FS, tt.name)
		if err != nil {
			t.Errorf("FS lacks %s: %v", tt.name, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s lacks %q", tt.name, w)
			}
		}
	}
	// The page must never turn received text into markup.
	js, _ := fs.ReadFile(FS, "app.js")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		if strings.Contains(string(js), bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
}
