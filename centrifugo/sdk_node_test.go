package centrifugo

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
)

// sdkJSDir holds package.json and package-lock.json of the npm SDK test;
// `npm ci` there installs it (.ci/run does).
const sdkJSDir = "testdata/sdk-js"

// TestCentrifugeJSSDK drives the npm centrifuge SDK (with the npm ws
// package as its WebSocket, Node has none) through the same scenario as
// TestCentrifugeGoSDK, over JSON and over Protobuf. It is skipped when
// node_modules is missing, unless WSGATE_REQUIRE_SDK=1.
func TestCentrifugeJSSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	if _, serr := os.Stat(filepath.Join(sdkJSDir, "node_modules", "centrifuge")); serr != nil || err != nil {
		msg := "the npm centrifuge SDK is not installed: run `npm ci` in centrifugo/" + sdkJSDir + " (needs Node 20)"
		if os.Getenv("WSGATE_REQUIRE_SDK") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	for _, proto := range []protocol.Type{protocol.TypeJSON, protocol.TypeProtobuf} {
		t.Run(string(proto), func(t *testing.T) {
			s := newServer(t, testHubConfig(), Config{})
			ctx, cancel := context.WithTimeout(bg, 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, "sdk_test.mjs")
			cmd.Dir = sdkJSDir
			cmd.Env = append(os.Environ(),
				"WS_URL="+s.ws,
				"API_URL="+s.api,
				"API_KEY="+testAPIKey,
				"TOKEN="+userToken(t, "js-user", nil),
				"BAD_TOKEN="+strings.Replace(userToken(t, "x", nil), ".", ".x", 1),
				"PROTOCOL="+string(proto),
			)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("node: %v\n%s", err, out)
			}
			t.Logf("%s", out)
		})
	}
}
