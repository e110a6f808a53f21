// codehub: helpers shared by every page. Loaded first (deferred) as window.codehub.
(function () {
  'use strict';

  function meta(name) {
    const m = document.querySelector('meta[name="' + name + '"]');
    return m ? m.getAttribute('content') || '' : '';
  }

  const xsrf = meta('codehub-xsrf');
  const user = meta('codehub-user');
  const base = meta('codehub-base');

  function apiError(status, message) {
    const err = new Error(message);
    err.status = status;
    return err;
  }

  // Calls the REST API and resolves to {status, data}; data is the parsed JSON body, or
  // null when there is none (204, or a 202 without a body). Rejects with an Error whose
  // message is the API's own `message` and whose `status` is the HTTP status (0: no reply).
  async function request(method, path, body, headers) {
    const init = {
      method: method,
      credentials: 'same-origin',
      cache: 'no-store',
      headers: Object.assign({
        'Accept': 'application/json',
        'Content-Type': 'application/json',
        'X-XSRF-Token': xsrf,
      }, headers || {}),
    };
    if (body !== undefined) init.body = JSON.stringify(body);
    let res;
    try {
      res = await fetch(base + '/hub/api' + path, init);
    } catch (e) {
      throw apiError(0, 'Cannot reach the hub. Check your connection and try again.');
    }
    const text = res.status === 204 ? '' : await res.text();
    let data = null;
    let parsed = true;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        parsed = false;
      }
    }
    if (!res.ok) {
      const msg = data && typeof data.message === 'string' && data.message
        ? data.message
        : 'The hub answered ' + res.status + (res.statusText ? ' ' + res.statusText : '') + '.';
      throw apiError(res.status, msg);
    }
    if (!parsed) throw apiError(res.status, 'The hub sent a reply that is not JSON.');
    return { status: res.status, data: data };
  }

  // Like request() but resolves to the parsed body only (null for 204).
  async function api(method, path, body, headers) {
    return (await request(method, path, body, headers)).data;
  }

  function appendChildren(node, children) {
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) appendChildren(node, c);
      else node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  // Builds an element. Text is only ever added as text nodes, never parsed as HTML, so
  // values from the API cannot inject markup. attrs: "class", "dataset" (object), "onX"
  // (function: event listener), true (boolean attribute), false/null (left out).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') {
        node.addEventListener(k.slice(2), v);
      } else if (k === 'class') {
        node.className = v;
      } else if (k === 'dataset') {
        Object.assign(node.dataset, v);
      } else if (v === true) {
        node.setAttribute(k, '');
      } else {
        const s = String(v);
        if ((k === 'href' || k === 'src') && /^\s*(javascript|data|vbscript):/i.test(s)) continue;
        node.setAttribute(k, s);
      }
    }
    appendChildren(node, children);
    return node;
  }

  function parseTime(iso) {
    if (!iso) return null;
    const d = new Date(iso);
    return isNaN(d.getTime()) ? null : d;
  }

  const units = [['year', 31536000], ['month', 2592000], ['day', 86400], ['hour', 3600],
    ['minute', 60]];
  // numeric 'always': "1 day ago" is exact where "yesterday" may name the wrong date.
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'always' });

  // "3 minutes ago", "in 7 days", "just now"; "" for a missing or unreadable timestamp.
  function ago(iso, now) {
    const d = parseTime(iso);
    if (!d) return '';
    const secs = (d.getTime() - (now === undefined ? Date.now() : now)) / 1000;
    const abs = Math.abs(secs);
    if (abs < 45) return secs <= 0 ? 'just now' : 'in a few seconds';
    for (const [unit, size] of units) {
      if (abs >= size * 0.95) return rtf.format(Math.round(secs / size), unit);
    }
    return rtf.format(Math.round(secs / 60), 'minute');
  }

  function fullDate(d) {
    return d.toLocaleString(undefined, { dateStyle: 'full', timeStyle: 'long' });
  }

  // A <time> showing ago(iso) with the full date as its tooltip, or a muted `empty`
  // ("never" by default) when there is no timestamp.
  function time(iso, empty) {
    const d = parseTime(iso);
    if (!d) return el('span', { class: 'muted' }, empty === undefined ? 'never' : empty);
    return el('time', { datetime: iso, title: fullDate(d), dataset: { rel: '' } }, ago(iso));
  }

  function refreshTimes() {
    for (const t of document.querySelectorAll('time[data-rel]')) {
      t.textContent = ago(t.getAttribute('datetime'));
    }
  }

  // Shows `message` in a role="status" element; kind is "error", "ok" or "" (neutral).
  function setStatus(node, message, kind) {
    if (!node) return;
    node.textContent = message || '';
    if (kind) node.dataset.kind = kind;
    else delete node.dataset.kind;
  }

  // Disables `button` while `fn` runs, so a double click cannot send a request twice.
  async function busy(button, fn) {
    if (button) button.disabled = true;
    try {
      return await fn();
    } finally {
      if (button) button.disabled = false;
    }
  }

  // Server-rendered timestamps: <span class="ts" data-ts="ISO or empty">.
  for (const node of document.querySelectorAll('[data-ts]')) {
    const iso = node.getAttribute('data-ts');
    node.replaceChildren();
    if (iso) node.appendChild(time(iso));
  }
  setInterval(refreshTimes, 30000);

  window.codehub = {
    xsrf: xsrf, user: user, base: base,
    request: request, api: api, el: el, ago: ago, time: time,
    setStatus: setStatus, busy: busy, refreshTimes: refreshTimes,
  };
})();
