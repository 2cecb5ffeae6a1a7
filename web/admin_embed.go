package web

import "embed"

// AdminFS holds the admin dashboard under admin/: index.html, admin.js and
// admin.css, no build step and no third-party code. The server serves it
// at /admin/ on its admin address, behind the admin password; the page
// polls /admin/api/stats and draws its charts as plain SVG. Every figure
// and every channel name is written with textContent, never as HTML.
//
//go:embed admin
var AdminFS embed.FS
