// samsa-stream browser display: shows one stream's image with the masks drawn here, takes clicks as prompts.
// Wire format: docs/web.md. No build step, no dependencies.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const maskCanvas = document.createElement("canvas"); // the masks at image size, drawn over the image
  const maskCtx = maskCanvas.getContext("2d");
  const FILL_ALPHA = 110; // of 255: the tissue stays visible under the mask
  const MARKER_MS = 8000; // a click marker fades out after this long
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;

  // The token comes once in the page URL; it is kept in memory only and taken out of the address bar.
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  if (token !== null) {
    params.delete("token");
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? "?" + query : ""));
  }

  // Everything the page knows; exposed as window.samsa for tests and curious operators.
  const state = {
    stream: params.get("stream"),
    connected: false,
    mayPrompt: false,
    promptRefusal: null,
    staleAfterMs: 1000,
    tickMs: 500,
    lastMessageAt: 0,
    lastNewMaskAt: 0,
    maskKey: null,
    header: null,
    image: null,
    imageKey: null,
    areas: {},
    objectId: 1,
    markers: [],
    requestId: 0,
    backoffMs: BACKOFF_MIN_MS,
    framesReceived: 0,
    latencies: [],
    latencyMs: null,
    stale: true,
    staleReason: "waiting for the stream",
    lastReply: null,
    streams: [],
  };
  window.samsa = state;
  let ws = null;
  let maskImage = null;

  // --- messages shown to the operator ---

  function say(text, level = "info") {
    const li = document.createElement("li");
    li.className = level;
    li.textContent = new Date().toLocaleTimeString() + "  " + text;
    const list = $("messages");
    list.prepend(li);
    while (list.children.length > 8) list.lastChild.remove();
  }

  // --- connection ---

  function connect() {
    const q = new URLSearchParams();
    if (state.stream) q.set("stream", state.stream);
    if (token) q.set("token", token);
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws?" + q.toString());
    socket.binaryType = "arraybuffer";
    let opened = false;
    socket.onopen = () => {
      opened = true;
      state.connected = true;
      state.backoffMs = BACKOFF_MIN_MS;
      state.lastMessageAt = performance.now();
      updateStatus();
    };
    socket.onmessage = (event) => {
      state.lastMessageAt = performance.now();
      if (typeof event.data === "string") {
        let msg;
        try { msg = JSON.parse(event.data); } catch (err) { say("unreadable message from the server", "error"); return; }
        onJson(msg);
      } else {
        onFrame(event.data);
      }
    };
    socket.onclose = () => {
      if (ws === socket) ws = null;
      state.connected = false;
      updateStatus();
      if (!opened) explainRefusal();
      const delay = state.backoffMs * (0.75 + Math.random() * 0.5);
      state.backoffMs = Math.min(BACKOFF_MAX_MS, state.backoffMs * 2);
      setTimeout(connect, delay);
    };
    ws = socket;
  }

  async function explainRefusal() {
    // A refused WebSocket tells the page nothing: ask the status endpoint why (403 carries the reason).
    try {
      const headers = token ? { Authorization: "Bearer " + token } : {};
      const response = await fetch("/api/status", { headers, cache: "no-store" });
      if (response.status === 403) {
        const body = await response.json();
        showAccess("access refused: " + body.error);
      }
    } catch (err) {
      // the server is down: the connection badge already says so
    }
  }

  function showAccess(text) {
    const p = $("access");
    p.hidden = !text;
    p.textContent = text || "";
  }

  function send(msg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      say("not connected: " + msg.op + " not sent", "error");
      return false;
    }
    ws.send(JSON.stringify(msg));
    return true;
  }

  function onJson(msg) {
    if (msg.type === "hello") {
      state.mayPrompt = msg.may_prompt;
      state.promptRefusal = msg.prompt_refusal;
      state.staleAfterMs = msg.stale_after_s * 1000;
      state.tickMs = msg.tick_s * 1000;
      if (state.stream !== msg.stream) clearStream();
      state.stream = msg.stream;
      showAccess(msg.may_prompt ? "" : "view only: " + msg.prompt_refusal);
      for (const b of document.querySelectorAll("#tools button")) b.disabled = !msg.may_prompt;
      setStreams(msg.streams);
    } else if (msg.type === "tick") {
      setStreams(msg.streams);
    } else if (msg.type === "reply") {
      state.lastReply = msg;
      if (!msg.ok) say((msg.refused ? "refused: " : "worker: ") + msg.op + ": " + msg.error, "error");
      else say(msg.op + " done", "info");
      for (const w of msg.warnings || []) say("worker: " + w, "warn");
    } else if (msg.type === "error") {
      say("server: " + msg.error, "error");
    } else if (msg.type === "selected") {
      state.stream = msg.stream;
    }
  }

  function setStreams(streams) {
    state.streams = streams;
    const select = $("stream");
    const names = streams.map((s) => s.stream);
    if (state.stream && !names.includes(state.stream)) names.unshift(state.stream);
    const current = Array.from(select.options).map((o) => o.value);
    if (current.join("\n") !== names.join("\n")) {
      select.replaceChildren(...names.map((n) => new Option(n, n)));
    }
    select.value = state.stream || "";
  }

  function clearStream() {
    state.header = null;
    state.image = null;
    state.imageKey = null;
    state.maskKey = null;
    state.lastNewMaskAt = 0;
    state.areas = {};
    state.markers = [];
    maskImage = null;
  }

  // --- frames ---

  function onFrame(buffer) {
    const view = new DataView(buffer);
    const magic = String.fromCharCode(view.getUint8(0), view.getUint8(1), view.getUint8(2), view.getUint8(3));
    if (magic !== "SWF1") { say("unknown frame format from the server", "error"); return; }
    const length = view.getUint32(4, true);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, length)));
    if (header.stream !== state.stream) return; // a frame sent before a stream switch took effect
    const body = 8 + length;
    const receivedAt = Date.now();
    state.framesReceived += 1;
    const key = header.publisher + "/" + header.seq;
    if (header.seq !== null && key !== state.maskKey) {
      state.maskKey = key;
      state.lastNewMaskAt = performance.now();
      if (header.capture_ms !== null) {
        state.latencyMs = receivedAt - header.capture_ms;
        state.latencies.push(state.latencyMs);
        if (state.latencies.length > 1000) state.latencies.shift();
      }
    }
    state.header = header;
    if (header.size) drawMasks(buffer, body, header);
    const img = header.image;
    if (img && img.length && img.seq + "/" + img.frame_id !== state.imageKey) {
      const imageKey = img.seq + "/" + img.frame_id;
      const blob = new Blob([new Uint8Array(buffer, body + img.offset, img.length)],
        { type: img.encoding === "png" ? "image/png" : "image/jpeg" });
      createImageBitmap(blob).then((bitmap) => {
        if (state.header !== null && state.header.stream === header.stream) {
          state.image = bitmap;
          state.imageKey = imageKey;
          draw();
        }
      }, () => say("an image did not decode", "warn"));
    }
    updateLegend();
    updateStatus();
    draw();
  }

  function drawMasks(buffer, body, header) {
    const [h, w] = header.size;
    if (maskCanvas.width !== w || maskCanvas.height !== h) {
      maskCanvas.width = w;
      maskCanvas.height = h;
    }
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
      fit();
    }
    const rgba = new Uint8ClampedArray(w * h * 4);
    const inside = new Uint8Array(w * h);
    const areas = {};
    for (const obj of header.objects) {
      const [offset, count] = obj.rle;
      const runs = new Uint32Array(buffer.slice(body + offset, body + offset + 4 * count));
      inside.fill(0);
      let pos = 0;
      let area = 0;
      for (let i = 0; i < runs.length; i++) {
        const n = runs[i];
        if (i % 2 === 1) { inside.fill(1, pos, Math.min(pos + n, inside.length)); area += n; }
        pos += n;
      }
      if (pos !== w * h) { say("object " + obj.id + ": mask does not fit the image", "warn"); continue; }
      areas[obj.id] = area;
      const [r, g, b] = obj.colour;
      pos = 0;
      for (let i = 0; i < runs.length; i++) {
        const n = runs[i];
        if (i % 2 === 1) {
          for (let p = pos; p < pos + n; p++) {
            const x = p % w;
            const edge = x === 0 || x === w - 1 || p < w || p >= w * (h - 1)
              || !inside[p - 1] || !inside[p + 1] || !inside[p - w] || !inside[p + w];
            const q = 4 * p;
            rgba[q] = r; rgba[q + 1] = g; rgba[q + 2] = b;
            rgba[q + 3] = edge ? 255 : FILL_ALPHA;
          }
        }
        pos += n;
      }
    }
    state.areas = areas;
    maskCtx.putImageData(new ImageData(rgba, w, h), 0, 0);
    maskImage = maskCanvas;
  }

  function draw() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (state.image) ctx.drawImage(state.image, 0, 0, canvas.width, canvas.height);
    if (maskImage) ctx.drawImage(maskImage, 0, 0);
    const now = performance.now();
    state.markers = state.markers.filter((m) => now - m.at < MARKER_MS);
    const radius = Math.max(3, Math.round(Math.min(canvas.width, canvas.height) / 60));
    for (const m of state.markers) {
      ctx.globalAlpha = 1 - (now - m.at) / MARKER_MS * 0.7;
      ctx.beginPath();
      ctx.arc(m.x, m.y, radius, 0, 2 * Math.PI);
      ctx.fillStyle = m.positive ? "#2ea043" : "#da3633";
      ctx.fill();
      ctx.lineWidth = Math.max(1, radius / 3);
      ctx.strokeStyle = "#fff";
      ctx.stroke();
      ctx.beginPath(); // + or -
      ctx.moveTo(m.x - radius * 0.6, m.y); ctx.lineTo(m.x + radius * 0.6, m.y);
      if (m.positive) { ctx.moveTo(m.x, m.y - radius * 0.6); ctx.lineTo(m.x, m.y + radius * 0.6); }
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
  }

  function fit() {
    // Largest size with the image's aspect ratio that fits the view; clicks are converted back (toImage).
    const box = $("view").getBoundingClientRect();
    const scale = Math.max(0.1, Math.min((box.width - 16) / canvas.width, (box.height - 16) / canvas.height));
    canvas.style.width = Math.floor(canvas.width * scale) + "px";
    canvas.style.height = Math.floor(canvas.height * scale) + "px";
  }

  // --- legend and status line ---

  function objectColour(id) {
    const obj = state.header && state.header.objects.find((o) => o.id === id);
    return obj ? "rgb(" + obj.colour.join(",") + ")" : "transparent";
  }

  function updateLegend() {
    const list = $("legend");
    const objects = state.header ? state.header.objects : [];
    list.replaceChildren(...objects.map((obj) => {
      const li = document.createElement("li");
      li.dataset.objectId = obj.id;
      li.className = (obj.present ? "" : "absent ") + (obj.id === state.objectId ? "current" : "");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = "rgb(" + obj.colour.join(",") + ")";
      const label = document.createElement("span");
      label.textContent = obj.id + "  " + (obj.label || "object " + obj.id);
      const meta = document.createElement("span");
      meta.className = "meta";
      meta.textContent = obj.present
        ? "score " + Number(obj.score).toFixed(2) + " · " + (state.areas[obj.id] ?? obj.area) + " px"
        : "absent";
      li.append(swatch, label, meta);
      li.addEventListener("click", () => setObject(obj.id));
      return li;
    }));
    const notices = state.header ? state.header.notices : [];
    $("notices").replaceChildren(...notices.map((n) => { const li = document.createElement("li"); li.textContent = n; return li; }));
    $("current").textContent = state.objectId;
    $("current").style.color = objectColour(state.objectId) === "transparent" ? "" : objectColour(state.objectId);
  }

  function updateStatus() {
    const badge = $("connection");
    badge.textContent = state.connected ? "connected" : "disconnected";
    badge.className = "badge " + (state.connected ? "on" : "off");
    document.body.dataset.connected = String(state.connected);
    const h = state.header;
    if (h) {
      $("frame").textContent = "frame " + (h.frame_id ?? "-") + (h.missed ? " (" + h.missed + " missed)" : "");
      const parts = [];
      if (state.latencyMs !== null) parts.push("capture→screen " + Math.round(state.latencyMs) + " ms");
      if (h.server_latency_ms !== null) parts.push("at server " + Math.round(h.server_latency_ms) + " ms");
      $("latency").textContent = parts.length ? parts.join(" · ") : "latency -";
      $("engine").textContent = h.engine ? "engine " + h.engine : "";
      document.body.dataset.frameId = String(h.frame_id ?? "");
    }
  }

  // The page decides on its own too: a silent socket or a closed one never leaves a mask looking live.
  function checkStale() {
    const now = performance.now();
    let reason = null;
    const h = state.header;
    if (!state.connected) reason = "no connection to the display server (reconnecting)";
    else if (now - state.lastMessageAt > 3 * state.tickMs + 500) reason = "nothing heard from the display server";
    else if (!h || h.seq === null) reason = "no mask received yet";
    else if (h.stale) reason = "the node has no new mask (worker or camera stopped?)";
    else if (now - state.lastNewMaskAt > state.staleAfterMs) reason = "no new mask for " + ((now - state.lastNewMaskAt) / 1000).toFixed(1) + " s";
    if (reason === null && h && h.age_ms !== null && h.age_ms > state.staleAfterMs) reason = "the newest mask is " + Math.round(h.age_ms) + " ms old";
    state.stale = reason !== null;
    state.staleReason = reason;
    document.body.dataset.stale = String(state.stale);
    $("stale").hidden = !state.stale;
    $("stale-reason").textContent = reason || "";
    if (state.markers.length) draw(); // let old markers fade
  }

  // --- prompts ---

  function toImage(event) {
    const rect = canvas.getBoundingClientRect();
    return {
      x: Math.min(canvas.width - 1, Math.max(0, (event.clientX - rect.left) * canvas.width / rect.width)),
      y: Math.min(canvas.height - 1, Math.max(0, (event.clientY - rect.top) * canvas.height / rect.height)),
    };
  }

  function prompt(op, fields) {
    if (!state.mayPrompt) {
      say("not sent: " + (state.promptRefusal || "prompts are not allowed from this page"), "error");
      return false;
    }
    state.requestId += 1;
    return send({ type: "prompt", id: state.requestId, op, ...fields });
  }

  function click(event) {
    if (event.button !== 0 && event.button !== 2) return;
    event.preventDefault();
    if (!state.header || !state.header.size) { say("no image yet: click not sent", "warn"); return; }
    const p = toImage(event);
    const positive = event.button === 0 && !event.shiftKey;
    if (prompt("click", { object_id: state.objectId, x: p.x, y: p.y, positive, frame_id: state.header.frame_id })) {
      state.markers.push({ x: p.x, y: p.y, positive, objectId: state.objectId, at: performance.now() });
      draw();
    }
  }

  function setObject(id) {
    state.objectId = id;
    updateLegend();
  }

  function newObject() {
    const ids = (state.header ? state.header.objects.map((o) => o.id) : []).concat(state.markers.map((m) => m.objectId));
    setObject(Math.max(0, ...ids) + 1);
    say("clicks now go to object " + state.objectId);
  }

  function undo() {
    if (prompt("undo", { object_id: state.objectId })) {
      const i = state.markers.map((m) => m.objectId).lastIndexOf(state.objectId);
      if (i >= 0) state.markers.splice(i, 1);
      draw();
    }
  }

  function reset() {
    if (!window.confirm("Reset every object of stream " + state.stream + "?")) return;
    if (prompt("reset", {})) {
      state.markers = [];
      setObject(1);
      draw();
    }
  }

  function remove() {
    if (prompt("remove", { object_id: state.objectId })) {
      state.markers = state.markers.filter((m) => m.objectId !== state.objectId);
      draw();
    }
  }

  canvas.addEventListener("mousedown", click);
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  $("new").addEventListener("click", newObject);
  $("undo").addEventListener("click", undo);
  $("reset").addEventListener("click", reset);
  $("remove").addEventListener("click", remove);
  $("stream").addEventListener("change", (event) => {
    const stream = event.target.value;
    if (!stream || stream === state.stream) return;
    clearStream();
    state.stream = stream;
    const q = new URLSearchParams(location.search);
    q.set("stream", stream);
    history.replaceState(null, "", location.pathname + "?" + q.toString());
    state.requestId += 1;
    send({ type: "select", id: state.requestId, stream });
    draw();
  });
  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLSelectElement || event.altKey || event.metaKey) return;
    const key = event.key.toLowerCase();
    if (event.ctrlKey && key !== "z") return;
    if (key === "n") newObject();
    else if (key === "u" || (key === "z" && event.ctrlKey)) undo();
    else if (key === "r") reset();
    else if (key === "delete" || key === "backspace") remove();
    else return;
    event.preventDefault();
  });
  window.addEventListener("resize", fit);

  fit();
  draw();
  setInterval(checkStale, 100);
  connect();
})();
