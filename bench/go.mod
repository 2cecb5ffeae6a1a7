module github.com/wsgate/wsgate/bench

go 1.26.0

require (
	github.com/centrifugal/protocol v0.23.1
	github.com/gorilla/websocket v1.5.3
	github.com/lesismal/nbio v1.6.8
	github.com/lxzan/gws v1.8.9
	github.com/wsgate/wsgate v0.0.0-00010101000000-000000000000
	golang.org/x/sys v0.50.0
)

require (
	github.com/HdrHistogram/hdrhistogram-go v1.4.0 // indirect
	github.com/dolthub/maphash v0.1.0 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/lesismal/llib v1.2.2 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

// The baselines and tabulate use wsgate's own packages (internal/loadtest's
// report types) from this checkout, never a published version.
replace github.com/wsgate/wsgate => ../
