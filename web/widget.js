/* Flywheel web messenger. Embed on any page:
 *   <script src="https://YOUR-FLYWHEEL/widget.js" data-key="pk_..." async></script>
 * The script finds the API from its own src, draws a chat bubble in a shadow root (the page's CSS
 * cannot reach it, its CSS cannot reach the page), and talks to /public/v1/{key}/... (CORS).
 * Every text from the visitor, the assistant or an agent is inserted with textContent, never as
 * HTML; links (citations) are only http(s) URLs and open in a new tab with rel=noopener.
 * No dependencies, no build step. */
(function () {
  "use strict";

  function findScript() {
    if (document.currentScript && document.currentScript.getAttribute("data-key")) {
      return document.currentScript;
    }
    var all = document.querySelectorAll("script[data-key]");
    for (var i = 0; i < all.length; i++) {
      if (/\/widget\.js(\?|#|$)/.test(all[i].src)) return all[i];
    }
    return null;
  }

  var script = findScript();
  if (!script) return;
  var KEY = script.getAttribute("data-key") || "";
  if (!/^pk_[A-Za-z0-9_-]{16,64}$/.test(KEY)) {
    if (window.console) console.warn("flywheel widget: data-key is missing or malformed");
    return;
  }
  window.__flywheelWidgets = window.__flywheelWidgets || {};
  if (window.__flywheelWidgets[KEY]) return; // embedded twice: one widget
  window.__flywheelWidgets[KEY] = true;

  var srcUrl = new URL(script.src, location.href);
  var BASE = srcUrl.origin + srcUrl.pathname.replace(/\/widget\.js$/, "");
  var API = BASE + "/public/v1/" + encodeURIComponent(KEY);

  // ---- storage (localStorage of the embedding page; memory when it is unavailable) ----------
  var memory = {};
  function load(name) {
    try { return window.localStorage.getItem("flywheel:" + KEY + ":" + name); } catch (e) { return memory[name] || null; }
  }
  function save(name, value) {
    try {
      if (value === null) window.localStorage.removeItem("flywheel:" + KEY + ":" + name);
      else window.localStorage.setItem("flywheel:" + KEY + ":" + name, value);
    } catch (e) { memory[name] = value; }
  }
  function randomId(prefix) {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    var hex = "";
    for (var i = 0; i < bytes.length; i++) hex += (bytes[i] + 256).toString(16).slice(1);
    return prefix + hex;
  }

  var visitor = load("visitor");
  if (!visitor || !/^[A-Za-z0-9][A-Za-z0-9_-]{15,63}$/.test(visitor)) visitor = null;

  // ---- DOM helpers: text only --------------------------------------------------------------
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function safeUrl(url) {
    if (typeof url !== "string") return null;
    try {
      var u = new URL(url);
      return (u.protocol === "http:" || u.protocol === "https:") ? u.href : null;
    } catch (e) { return null; }
  }

  // ---- the widget ---------------------------------------------------------------------------
  var host = el("div");
  host.id = "flywheel-widget-" + KEY.slice(3, 11);
  host.setAttribute("data-flywheel-widget", "");
  host.style.cssText = "position:fixed;z-index:2147483000;right:0;bottom:0;width:0;height:0;visibility:hidden";
  var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;

  var css = el("link");
  css.rel = "stylesheet";
  css.href = BASE + "/widget.css";
  var shown = false;
  function reveal() { if (!shown) { shown = true; host.style.visibility = "visible"; } }
  css.onload = reveal;
  css.onerror = reveal;
  setTimeout(reveal, 3000);
  root.appendChild(css);

  var wrap = el("div", "fw");
  var bubble = el("button", "fw-bubble");
  bubble.type = "button";
  bubble.setAttribute("aria-label", "Open chat");
  function icon(d) {  // a static SVG path (no emoji font needed)
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "26");
    svg.setAttribute("height", "26");
    svg.setAttribute("aria-hidden", "true");
    var path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    path.setAttribute("fill", "currentColor");
    svg.appendChild(path);
    return svg;
  }
  var chatIcon = icon("M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 6v2h2V9H7zm4 0v2h2V9h-2zm4 0v2h2V9h-2z");
  var closeIcon = icon("M6.4 5 5 6.4 10.6 12 5 17.6 6.4 19l5.6-5.6 5.6 5.6 1.4-1.4-5.6-5.6L19 6.4 17.6 5 12 10.6z");
  closeIcon.style.display = "none";
  bubble.appendChild(chatIcon);
  bubble.appendChild(closeIcon);
  var badge = el("span", "fw-badge");
  badge.hidden = true;
  bubble.appendChild(badge);

  var panel = el("section", "fw-panel");
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-label", "Chat");
  panel.hidden = true;

  var header = el("header", "fw-header");
  var titles = el("div", "fw-titles");
  var title = el("div", "fw-title", "Chat with us");
  var subtitle = el("div", "fw-subtitle", "Our assistant answers right away");
  titles.appendChild(title);
  titles.appendChild(subtitle);
  var close = el("button", "fw-close", "\u00D7");
  close.type = "button";
  close.setAttribute("aria-label", "Close chat");
  header.appendChild(titles);
  header.appendChild(close);

  var list = el("div", "fw-messages");
  list.setAttribute("role", "log");
  list.setAttribute("aria-live", "polite");
  var greeting = el("div", "fw-msg fw-assistant fw-greeting");
  greeting.appendChild(el("div", "fw-text", "Hi! How can we help?"));
  list.appendChild(greeting);

  var typing = el("div", "fw-typing");
  typing.setAttribute("aria-label", "The assistant is typing");
  typing.appendChild(el("span"));
  typing.appendChild(el("span"));
  typing.appendChild(el("span"));
  typing.hidden = true;

  var person = el("button", "fw-person", "Talk to a person");
  person.type = "button";

  var form = el("form", "fw-form");
  var input = el("textarea", "fw-input");
  input.rows = 1;
  input.maxLength = 4000;
  input.placeholder = "Type your message\u2026";
  input.setAttribute("aria-label", "Your message");
  var send = el("button", "fw-send", "Send");
  send.type = "submit";
  form.appendChild(input);
  form.appendChild(send);

  panel.appendChild(header);
  panel.appendChild(list);
  panel.appendChild(typing);
  panel.appendChild(person);
  panel.appendChild(form);
  wrap.appendChild(panel);
  wrap.appendChild(bubble);
  root.appendChild(wrap);

  // ---- transcript ---------------------------------------------------------------------------
  var nodes = {};     // seq -> element
  var lastSeq = 0;
  var status = null;
  var unread = 0;
  var LABELS = { assistant: "Assistant", agent: "Support team" };

  function scrollDown() { list.scrollTop = list.scrollHeight; }

  function renderMessage(m) {
    var role = { customer: 1, assistant: 1, agent: 1, system: 1 }[m.role] ? m.role : "system";
    var node = el("div", "fw-msg fw-" + role);
    node.setAttribute("data-seq", String(m.seq));
    if (LABELS[role]) node.appendChild(el("div", "fw-who", LABELS[role]));
    node.appendChild(el("div", "fw-text", m.text || ""));
    var cites = (m.citations || []).filter(function (c) { return c && (c.title || c.url); });
    if (cites.length) {
      var box = el("div", "fw-citations");
      box.appendChild(el("span", "fw-sources", "Sources: "));
      cites.forEach(function (c, i) {
        var href = safeUrl(c.url);
        var item;
        if (href) {
          item = el("a", "fw-cite", c.title || href);
          item.href = href;
          item.target = "_blank";
          item.rel = "noopener noreferrer";
        } else {
          item = el("span", "fw-cite", c.title);
        }
        if (i) box.appendChild(document.createTextNode(", "));
        box.appendChild(item);
      });
      node.appendChild(box);
    }
    return node;
  }

  function addMessages(messages) {
    var added = 0;
    (messages || []).forEach(function (m) {
      if (!m || typeof m.seq !== "number" || nodes[m.seq]) return;
      var node = renderMessage(m);
      nodes[m.seq] = node;
      // keep seq order (messages can arrive from the POST answer and the stream in any order)
      var after = null;
      var seqs = Object.keys(nodes).map(Number).filter(function (s) { return s > m.seq; }).sort(function (a, b) { return a - b; });
      if (seqs.length) after = nodes[seqs[0]];
      list.insertBefore(node, after || pendingAnchor());
      if (m.seq > lastSeq) lastSeq = m.seq;
      if (m.role !== "customer") added++;
      else {
        // the stream can bring the customer's own message before the POST returns
        var pending = pendingAnchor();
        if (pending && pending.textContent === (m.text || "")) pending.remove();
      }
    });
    // a reply can come by the stream before the POST that asked for it returns:
    // the indicator goes with the reply, not with the request
    if (added) typing.hidden = true;
    if (added && panel.hidden) {
      unread += added;
      badge.textContent = String(unread);
      badge.hidden = false;
    }
    scrollDown();
  }

  function pendingAnchor() { return list.querySelector(".fw-pending"); }

  function setStatus(value) {
    if (!value) return;
    status = value;
    if (value === "handed_off") subtitle.textContent = "A person from our team will reply here";
    else if (value === "closed") subtitle.textContent = "This conversation has ended \u2014 write to start a new one";
    else subtitle.textContent = "Our assistant answers right away";
    person.hidden = value === "handed_off";
  }

  function notice(text) {
    var node = el("div", "fw-msg fw-system fw-local", text);
    list.appendChild(node);
    scrollDown();
  }

  // ---- network ------------------------------------------------------------------------------
  function request(method, path, body) {
    var opts = { method: method, credentials: "omit", mode: "cors", headers: {} };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(API + path, opts).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) {
          var err = new Error(data.message || ("HTTP " + r.status));
          err.status = r.status;
          throw err;
        }
        return data;
      });
    });
  }

  var source = null;
  var retryTimer = null;
  function listen() {
    if (!visitor || source || !window.EventSource) return;
    source = new EventSource(API + "/conversations/" + encodeURIComponent(visitor) + "/events?after=" + lastSeq);
    source.addEventListener("message", function (e) {
      try { addMessages([JSON.parse(e.data)]); } catch (err) { /* ignore a malformed event */ }
    });
    source.addEventListener("status", function (e) {
      try { setStatus(JSON.parse(e.data).status); } catch (err) { /* ignore */ }
    });
    source.onerror = function () {
      // EventSource reconnects by itself; when it gave up (HTTP error), try again later
      if (source && source.readyState === 2) {
        source = null;
        clearTimeout(retryTimer);
        retryTimer = setTimeout(listen, 10000);
      }
    };
  }
  function stopListening() {
    if (source) { source.close(); source = null; }
  }

  function resume() {
    if (!visitor) return;
    request("GET", "/conversations/" + encodeURIComponent(visitor)).then(function (data) {
      addMessages(data.messages);
      setStatus(data.status);
      listen();
    }).catch(function () { listen(); });
  }

  var inflight = 0;
  function busy(delta) {
    inflight += delta;
    typing.hidden = inflight <= 0;
    if (!typing.hidden) scrollDown();
  }

  function startConversationIfNeeded() {
    if (!visitor || status === "closed") {
      stopListening();
      visitor = randomId("v_");
      save("visitor", visitor);
      status = null;
    }
  }

  function deliver(path, body, pendingText) {
    startConversationIfNeeded();
    var pending = null;
    if (pendingText) {
      pending = el("div", "fw-msg fw-customer fw-pending");
      pending.appendChild(el("div", "fw-text", pendingText));
      list.appendChild(pending);
      scrollDown();
    }
    busy(1);
    listen();
    return request("POST", "/conversations/" + encodeURIComponent(visitor) + path, body).then(function (data) {
      if (pending) pending.remove();
      addMessages(data.messages);
      setStatus(data.status);
    }).catch(function (err) {
      if (pending) pending.remove();
      notice(err.status === 429 ? "You are sending messages too quickly. Please wait a moment."
                                : "Your message could not be sent. Please try again.");
      if (body && body.text && !input.value) input.value = body.text;
    }).then(function () { busy(-1); });
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    input.value = "";
    deliver("/messages", { text: text, message_id: randomId("m_") }, text);
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      if (form.requestSubmit) form.requestSubmit(); else send.click();
    }
  });
  person.addEventListener("click", function () { deliver("/person", undefined, null); });

  function open(state) {
    panel.hidden = !state;
    bubble.setAttribute("aria-label", state ? "Close chat" : "Open chat");
    wrap.classList.toggle("fw-open", state);
    chatIcon.style.display = state ? "none" : "";
    closeIcon.style.display = state ? "" : "none";
    save("open", state ? "1" : null);
    if (state) {
      unread = 0;
      badge.hidden = true;
      scrollDown();
      input.focus();
    }
  }
  bubble.addEventListener("click", function () { open(panel.hidden); });
  close.addEventListener("click", function () { open(false); });
  panel.addEventListener("keydown", function (e) { if (e.key === "Escape") open(false); });

  // ---- start --------------------------------------------------------------------------------
  function start() {
    document.body.appendChild(host);
    request("GET", "/config").then(function (cfg) {
      if (cfg.title) title.textContent = cfg.title;
      if (cfg.greeting) greeting.firstChild.textContent = cfg.greeting;
    }).catch(function () { /* defaults */ });
    if (load("open") === "1") open(true);
    resume();
  }
  if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
})();
