package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// sdkModules is where .ci/run installs the npm centrifuge SDK and ws.
const sdkModules = "../../centrifugo/testdata/sdk-js/node_modules"

// readmeSection returns the README's section with the given heading, and
// its code blocks by language, in order.
func readmeSection(t *testing.T, heading string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "\n## "+heading+"\n")
	if start < 0 {
		t.Fatalf("README.md has no section %q", heading)
	}
	text = text[start+1:]
	if end := strings.Index(text[3:], "\n## "); end >= 0 {
		text = text[:end+3]
	}
	blocks := make(map[string][]string)
	for _, m := range regexp.MustCompile("(?s)```(\\w+)\n(.*?)```").FindAllStringSubmatch(text, -1) {
		blocks[m[1]] = append(blocks[m[1]], m[2])
	}
	return blocks
}

// TestReadmePushFromBackend runs the README's "Push from your backend":
// the server started as it says, the centrifuge-js snippet with Node, and
// the curl, whose publication the snippet must print. It needs Node and
// the npm SDK that .ci/run installs; without them it is skipped, unless
// WSGATE_REQUIRE_SDK=1.
func TestReadmePushFromBackend(t *testing.T) {
	blocks := readmeSection(t, "Push from your backend")
	if len(blocks["sh"]) != 2 || len(blocks["js"]) != 1 {
		t.Fatalf("want two sh blocks (start, curl) and one js block, got %d and %d", len(blocks["sh"]), len(blocks["js"]))
	}
	node, nodeErr := exec.LookPath("node")
	curl, curlErr := exec.LookPath("curl")
	if _, err := os.Stat(filepath.Join(sdkModules, "centrifuge")); err != nil || nodeErr != nil || curlErr != nil {
		msg := "node, curl or the npm SDK is missing: run `npm ci` in centrifugo/testdata/sdk-js"
		if os.Getenv("WSGATE_REQUIRE_SDK") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}

	// The server, started as the README says (on a free port).
	words := strings.Fields(strings.ReplaceAll(blocks["sh"][0], "\\\n", " "))
	var env, args []string
	for i, w := range words {
		if w == "go" {
			if words[i+1] != "run" || words[i+2] != "./cmd/wsgate" {
				t.Fatalf("the start command is not go run ./cmd/wsgate: %q", words)
			}
			args = words[i+3:]
			break
		}
		env = append(env, w)
	}
	p := startProcessEnv(t, env, args...)
	localize := func(s string) string { return strings.ReplaceAll(s, "localhost:5555", p.addr) }

	// The client, with the npm packages next to it.
	dir := t.TempDir()
	modules, err := filepath.Abs(sdkModules)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(modules, filepath.Join(dir, "node_modules")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "client.mjs"), []byte(localize(blocks["js"][0])), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs")
	cmd.Dir = dir
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, out)
		close(lines)
	}()
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	var printed []string
	waitLine := func(want string) {
		t.Helper()
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("node exited before printing %q: %q", want, printed)
				}
				printed = append(printed, line)
				if line == want {
					return
				}
			case <-ctx.Done():
				t.Fatalf("node did not print %q: %q\nserver: %s", want, printed, p.stderr)
			}
		}
	}
	waitLine("subscribed to news")

	// The backend's curl.
	curlCmd := localize(blocks["sh"][1])
	if !strings.HasPrefix(curlCmd, "curl ") {
		t.Fatalf("the second block is not a curl: %q", curlCmd)
	}
	got, err := exec.CommandContext(ctx, "sh", "-c", strings.Replace(curlCmd, "curl ", curl+" -sS --fail ", 1)).CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, got)
	}
	if !regexp.MustCompile(`^\{"result":\{"offset":1,"epoch":"[^"]+"\}\}\s*$`).Match(got) {
		t.Errorf("curl printed %q, want what the README shows", got)
	}
	waitLine("publication 1 { text: 'hello from the backend' }")
}
