// wsgate's page: an echo client for /ws (opens a WebSocket, sends what is
// typed and logs what comes back) and a pub/sub client for
// /connection/websocket that speaks Centrifugo's JSON client protocol with
// a bare WebSocket (docs/protocol.md). Plain script, no build step, and
// everything received is shown as text (textContent), never as markup.
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

// The pub/sub panel: Centrifugo's client protocol (JSON) over a bare
// WebSocket. One command per frame, each with an id; replies carry it,
// pushes carry none, and an empty reply {} is a ping answered with {}.
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var output = $("ps-output");
  var urlField = $("ps-url");
  var tokenField = $("ps-token");
  var channelField = $("ps-channel");
  var messageField = $("ps-message");
  var stateEl = $("ps-state");
  var clientEl = $("ps-client");
  var joinedEl = $("ps-joined");
  var presenceEl = $("ps-presence");
  var connectBtn = $("ps-connect");
  var disconnectBtn = $("ps-disconnect");
  var joinBtn = $("ps-join");
  var leaveBtn = $("ps-leave");
  var publishBtn = $("ps-publish");

  var MAX_LOG_LINES = 500;
  var PRESENCE_EVERY = 5000; // ms between presence counts while joined

  var ws = null;         // the socket, null when disconnected
  var nextId = 0;        // last command id
  var pending = {};      // id -> what the command was, for its reply
  var connected = false; // the connect reply arrived
  var joined = "";       // the channel subscribed to, "" if none
  var positions = {};    // channel -> {epoch, offset}, to recover on a new join
  var presenceTimer = null;

  function defaultURL() {
    var loc = window.location;
    if (loc.protocol === "http:" || loc.protocol === "https:") {
      return (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + "/connection/websocket";
    }
    return "ws://localhost:5555/connection/websocket";
  }

  // print appends one line as text, never as markup.
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

  // setState shows disconnected, connecting or connected and enables the
  // buttons that make sense.
  function setState(s) {
    stateEl.textContent = s;
    stateEl.className = "state " + (s === "connected" ? "state-open" : s === "connecting" ? "state-connecting" : "state-closed");
    connectBtn.disabled = s !== "disconnected";
    disconnectBtn.disabled = s === "disconnected";
    joinBtn.disabled = s !== "connected";
    leaveBtn.disabled = s !== "connected" || joined === "";
    publishBtn.disabled = s !== "connected" || joined === "";
  }

  function setJoined(ch) {
    joined = ch;
    joinedEl.textContent = ch || "none";
    if (!ch) {
      presenceEl.textContent = "–";
    }
    if (presenceTimer !== null) {
      clearInterval(presenceTimer);
      presenceTimer = null;
    }
    if (ch) {
      presenceTimer = setInterval(askPresence, PRESENCE_EVERY);
    }
    setState(ws ? (connected ? "connected" : "connecting") : "disconnected");
  }

  function send(what, cmd) {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return;
    }
    nextId++;
    cmd.id = nextId;
    pending[nextId] = what;
    ws.send(JSON.stringify(cmd));
  }

  // who names a publication's or presence event's client.
  function who(info) {
    if (!info) {
      return "server";
    }
    if (info.user) {
      return info.user;
    }
    return "anonymous " + String(info.client || "").slice(0, 8);
  }

  // text shows a publication's data: its "text" when it has one, else JSON.
  function text(data) {
    if (data && typeof data === "object" && typeof data.text === "string") {
      return data.text;
    }
    return JSON.stringify(data);
  }

  function showPublication(ch, pub) {
    var offset = pub.offset || 0;
    if (offset > 0 && positions[ch]) {
      positions[ch].offset = offset;
    }
    print((offset > 0 ? "#" + offset + " " : "") + who(pub.info) + ": " + text(pub.data), "pub");
  }

  function askPresence() {
    if (joined) {
      send({ kind: "presence", channel: joined }, { presence_stats: { channel: joined } });
    }
  }

  function connect() {
    if (ws) {
      return;
    }
    var sock;
    try {
      sock = new WebSocket(urlField.value.trim());
    } catch (e) {
      print("ERROR: " + e.message, "error");
      return;
    }
    ws = sock;
    connected = false;
    pending = {};
    setState("connecting");
    sock.onopen = function () {
      var req = { name: "wsgate-page" };
      var token = tokenField.value.trim();
      if (token) {
        req.token = token;
      }
      send({ kind: "connect" }, { connect: req });
    };
    sock.onclose = function (ev) {
      print("CLOSE code=" + ev.code + " reason=" + ev.reason, "close");
      if (ev.code === 3501 && !tokenField.value.trim() && !connected) {
        print("The server does not accept anonymous connections: start it with -allow-anonymous (see above), or paste a token.", "hint");
      } else if (ev.code === 3500) {
        print("The server refused the token: it is not signed with the server's key, or is malformed.", "hint");
      }
      if (ws === sock) {
        ws = null;
      }
      connected = false;
      clientEl.textContent = "";
      setJoined("");
    };
    sock.onerror = function () {
      print("ERROR", "error");
    };
    sock.onmessage = function (ev) {
      var lines = String(ev.data).split("\n");
      for (var i = 0; i < lines.length; i++) {
        if (lines[i] === "") {
          continue;
        }
        var reply;
        try {
          reply = JSON.parse(lines[i]);
        } catch (e) {
          print("ERROR: bad frame from the server", "error");
          continue;
        }
        handle(reply);
      }
    };
  }

  function handle(reply) {
    if (reply.id) {
      var what = pending[reply.id] || {};
      delete pending[reply.id];
      if (reply.error) {
        onError(what, reply.error);
        return;
      }
      onReply(what, reply);
      return;
    }
    if (reply.push) {
      onPush(reply.push);
      return;
    }
    if (ws) {
      ws.send("{}"); // a ping: answer with a pong
    }
  }

  function onError(what, err) {
    if (what.kind === "presence") {
      presenceEl.textContent = err.code === 108 ? "off on this server" : "not allowed";
      return;
    }
    var hint = "";
    if (what.kind === "publish" && err.code === 103) {
      hint = " (start the server with -allow-publish)";
    }
    print("ERROR " + (what.kind || "") + ": " + err.code + " " + err.message + hint, "error");
  }

  function onReply(what, reply) {
    switch (what.kind) {
    case "connect":
      connected = true;
      var res = reply.connect || {};
      clientEl.textContent = "client " + String(res.client || "").slice(0, 8);
      print("CONNECTED client=" + res.client + (res.ping ? " ping=" + res.ping + "s" : ""), "open");
      setState("connected");
      break;
    case "subscribe":
      var sub = reply.subscribe || {};
      var pubs = sub.publications || [];
      // The stream's top: the result's offset, or the last recovered one.
      var top = sub.offset || 0;
      if (pubs.length > 0) {
        top = Math.max(top, pubs[pubs.length - 1].offset || 0);
      }
      var note = sub.epoch ? " offset=" + top : "";
      if (what.recover) {
        note += sub.recovered ? " recovered=" + pubs.length : " (could not recover what was missed)";
      }
      print("JOINED " + what.channel + note, "open");
      if (sub.epoch) {
        positions[what.channel] = { epoch: sub.epoch, offset: sub.offset || 0 };
      }
      for (var i = 0; i < pubs.length; i++) {
        showPublication(what.channel, pubs[i]);
      }
      setJoined(what.channel);
      askPresence();
      break;
    case "unsubscribe":
      print("LEFT " + what.channel, "close");
      break;
    case "presence":
      var st = reply.presence_stats || {};
      if (what.channel === joined) {
        presenceEl.textContent = (st.num_clients || 0) + " clients, " + (st.num_users || 0) + " users";
      }
      break;
    }
  }

  function onPush(push) {
    if (push.pub) {
      if (push.channel === joined) {
        showPublication(push.channel, push.pub);
      }
    } else if (push.join) {
      print("JOIN " + who(push.join.info), "info");
      askPresence();
    } else if (push.leave) {
      print("LEAVE " + who(push.leave.info), "info");
      askPresence();
    } else if (push.unsubscribe) {
      var u = push.unsubscribe;
      print("UNSUBSCRIBED " + push.channel + " code=" + u.code + " reason=" + u.reason, "close");
      if (push.channel === joined) {
        setJoined("");
        if (u.code >= 2500) {
          join(push.channel); // the server asks for a resubscription
        }
      }
    }
  }

  function join(ch) {
    ch = ch.trim();
    if (!ch || !connected) {
      return;
    }
    if (joined && joined !== ch) {
      send({ kind: "unsubscribe", channel: joined }, { unsubscribe: { channel: joined } });
      setJoined("");
    }
    var req = { channel: ch };
    var pos = positions[ch];
    if (pos) {
      req.recover = true;
      req.epoch = pos.epoch;
      req.offset = pos.offset;
    }
    send({ kind: "subscribe", channel: ch, recover: !!pos }, { subscribe: req });
  }

  connectBtn.addEventListener("click", connect);
  $("ps-connect-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    connect();
  });
  disconnectBtn.addEventListener("click", function () {
    if (ws) {
      ws.close(1000, "closed by user");
    }
  });
  $("ps-join-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    join(channelField.value);
  });
  leaveBtn.addEventListener("click", function () {
    if (joined) {
      send({ kind: "unsubscribe", channel: joined }, { unsubscribe: { channel: joined } });
      setJoined("");
    }
  });
  $("ps-publish-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (joined) {
      send({ kind: "publish" }, { publish: { channel: joined, data: { text: messageField.value } } });
    }
  });
  $("ps-clear").addEventListener("click", function () {
    output.textContent = "";
  });

  urlField.value = defaultURL();
  setState("disconnected");
})();
