// Package web holds the browser client that cmd/wsgate serves at "/": a
// plain page (index.html, app.js, style.css, no build step) with two
// panels. The echo panel opens a WebSocket to the server's /ws endpoint,
// sends messages and logs what comes back. The pub/sub panel speaks
// Centrifugo's JSON client protocol to /connection/websocket with a bare
// WebSocket: connect (anonymously or with a token), join a channel,
// publish, and show publications with their offsets and the channel's
// presence count.
//
// The files are embedded in the binary, so the page works whatever the
// working directory, and can also be opened from disk, in which case it
// connects to ws://localhost:5555/ws and
// ws://localhost:5555/connection/websocket.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// FS holds the page's files at its root: index.html, app.js and style.css.
// Serve it with http.FileServerFS.
var FS fs.FS = mustSub(static, "static")

// mustSub returns the subtree dir of fsys; dir is a constant that the
// embed directive guarantees, so a failure is a programming error.
func mustSub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic("web: " + err.Error())
	}
	return sub
}
