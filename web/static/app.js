// wsgate echo client: opens a WebSocket, sends what is typed and logs
// what comes back. Plain script, no build step.
"use strict";

(function () {
  var $ = function (id) { return document.getElementById(id); };
  var output = $("output");
  var input = $("input");
  var urlField = $("url");
  var stateEl = $("state");
  var heartbeatsEl = $("heartbeats");
  var openBtn = $("open");
  var closeBtn = $("close");
  var sendBtn = $("send");
  var reconnectBox = $("reconnect");
  var binaryBox = $("binary");

  var MAX_LOG_LINES = 500;
  var HEX_PREVIEW = 16;
  var BACKOFF_MIN = 500;
  var BACKOFF_MAX = 30000;

  var ws = null;            // the current socket, null when closed
  var heartbeats = 0;       // heartbeats on the current connection
  var backoff = BACKOFF_MIN; // next reconnect delay, in ms
  var retryTimer = null;    // pending reconnect, if any
  var userClosed = false;   // Close was clicked: do not reconnect

  // defaultURL derives the socket URL from the page's own location, so the
  // page works behind any host, port or TLS terminator. Opened from disk,
  // it falls back to the tutorial's address.
  function defaultURL() {
    var loc = window.location;
    if (loc.protocol === "http:" || loc.protocol === "https:") {
      return (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + "/ws";
    }
    return "ws://localhost:5555/ws";
  }

  // print appends one log line as text (textContent), never as markup:
  // the text may come from the network.
  function print(text, kind) {
    var line = document.createElement("div");
    line.className = "line " + (kind || "");
    line.textContent = text;
    output.appendChild(line);
    while (output.childNodes.length > MAX_LOG_LINES) {
      output.removeChild(output.firstChild);
    }
    output.scrollTop = output.scrollHeight;
  }

  function hexPreview(bytes) {
    var parts = [];
    for (var i = 0; i < bytes.length && i < HEX_PREVIEW; i++) {
      parts.push((bytes[i] < 16 ? "0" : "") + bytes[i].toString(16));
    }
    var s = "[binary " + bytes.length + " bytes]";
    if (parts.length > 0) {
      s += " " + parts.join(" ");
    }
    if (bytes.length > HEX_PREVIEW) {
      s += " …";
    }
    return s;
  }

  // setState shows one of connecting, open, closing, closed and enables
  // the buttons that make sense in it.
  function setState(s) {
    stateEl.textContent = s;
    stateEl.className = "state state-" + s;
    openBtn.disabled = s !== "closed";
    closeBtn.disabled = s === "closed" && retryTimer === null;
    sendBtn.disabled = s !== "open";
  }

  function cancelRetry() {
    if (retryTimer !== null) {
      clearTimeout(retryTimer);
      retryTimer = null;
    }
  }

  function scheduleRetry() {
    if (userClosed || !reconnectBox.checked || retryTimer !== null) {
      return;
    }
    var delay = backoff;
    backoff = Math.min(backoff * 2, BACKOFF_MAX);
    print("RECONNECT in " + (delay / 1000) + "s", "info");
    retryTimer = setTimeout(function () {
      retryTimer = null;
      connect();
    }, delay);
    setState("closed");
  }

  function connect() {
    cancelRetry();
    if (ws) {
      return;
    }
    var sock;
    try {
      sock = new WebSocket(urlField.value.trim());
    } catch (e) {
      print("ERROR: " + e.message, "error");
      setState("closed");
      scheduleRetry();
      return;
    }
    ws = sock;
    sock.binaryType = "arraybuffer";
    heartbeats = 0;
    heartbeatsEl.textContent = "0";
    setState("connecting");

    sock.onopen = function () {
      backoff = BACKOFF_MIN;
      print("OPEN", "open");
      setState("open");
    };
    sock.onclose = function (ev) {
      print("CLOSE code=" + ev.code + " reason=" + ev.reason, "close");
      if (ws === sock) {
        ws = null;
      }
      setState("closed");
      scheduleRetry();
    };
    sock.onerror = function () {
      // The browser hides the cause on purpose; the close event that
      // follows carries the code.
      print("ERROR", "error");
    };
    sock.onmessage = function (ev) {
      if (typeof ev.data === "string") {
        if (ev.data === "heartbeat") {
          heartbeats++;
          heartbeatsEl.textContent = String(heartbeats);
          if (heartbeats > 1) {
            return; // counted, not logged
          }
        }
        print("RESPONSE: " + ev.data, "response");
        return;
      }
      print("RESPONSE: " + hexPreview(new Uint8Array(ev.data)), "response");
    };
  }

  function send() {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      print("ERROR: not connected", "error");
      return;
    }
    var text = input.value;
    if (binaryBox.checked) {
      var bytes = new TextEncoder().encode(text);
      print("SEND: " + hexPreview(bytes), "send");
      ws.send(bytes);
      return;
    }
    print("SEND: " + text, "send");
    ws.send(text);
  }

  function close() {
    userClosed = true;
    cancelRetry();
    if (!ws) {
      setState("closed");
      return;
    }
    setState("closing");
    ws.close(1000, "closed by user");
  }

  openBtn.addEventListener("click", function () {
    userClosed = false;
    backoff = BACKOFF_MIN;
    connect();
  });
  closeBtn.addEventListener("click", close);
  $("send-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    send();
  });
  $("connect-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!ws) {
      userClosed = false;
      connect();
    }
  });
  reconnectBox.addEventListener("change", function () {
    if (!reconnectBox.checked) {
      cancelRetry();
      if (!ws) {
        setState("closed");
      }
    }
  });
  $("clear").addEventListener("click", function () {
    output.textContent = "";
  });

  urlField.value = defaultURL();
  setState("closed");
})();
