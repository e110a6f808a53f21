// codehub spawn-pending page: follows the server's start-up events and opens it when ready.
(function () {
  'use strict';
  const ch = window.codehub;
  const root = document.getElementById('spawn');
  if (!root) return;
  const user = root.dataset.user;
  const bar = document.getElementById('spawn-progress');
  const message = document.getElementById('spawn-message');
  const alertBox = document.getElementById('spawn-error');
  const retry = document.getElementById('spawn-retry');
  const log = document.getElementById('spawn-log');
  const serverPath = '/users/' + encodeURIComponent(user) + '/server';
  let finished = false;
  let errors = 0;

  // Only same-origin paths: "next" comes from the URL, so it must not send people elsewhere.
  function localPath(p) {
    return typeof p === 'string' && /^\/(?![\/\\])/.test(p) ? p : '';
  }

  function fail(text) {
    finished = true;
    root.dataset.state = 'failed';
    message.textContent = 'Your server could not start.';
    alertBox.textContent = text;
    alertBox.hidden = false;
    retry.hidden = false;
    log.parentElement.open = log.children.length > 0;
  }

  function show(d) {
    if (typeof d.progress === 'number' && isFinite(d.progress)) {
      const p = Math.max(0, Math.min(100, Math.round(d.progress)));
      bar.value = p;
      bar.textContent = p + '%';
    }
    if (d.message) {
      message.textContent = d.message;
      log.appendChild(ch.el('li', null, d.message));
    }
  }

  const source = new EventSource(ch.base + '/hub/api' + serverPath + '/progress');

  source.addEventListener('message', (ev) => {
    let d;
    try {
      d = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    if (!d || typeof d !== 'object') return;
    errors = 0;
    show(d);
    if (d.failed) {
      source.close();
      fail(d.message || 'The server failed to start.');
    } else if (d.ready) {
      source.close();
      finished = true;
      root.dataset.state = 'ready';
      bar.value = 100;
      message.textContent = 'Your server is ready. Opening it…';
      window.location.replace(localPath(root.dataset.next) || localPath(d.url) ||
        ch.base + '/user/' + encodeURIComponent(user) + '/');
    }
  });

  // EventSource reconnects by itself after a dropped stream; give up when the hub refuses
  // the stream (readyState CLOSED) or keeps dropping it.
  source.addEventListener('error', () => {
    if (finished) return;
    errors++;
    if (source.readyState === EventSource.CLOSED || errors >= 5) {
      source.close();
      fail('Lost contact with the hub while your server was starting.');
    } else {
      message.textContent = 'Reconnecting to the hub…';
    }
  });

  retry.addEventListener('click', () => ch.busy(retry, async () => {
    alertBox.hidden = true;
    message.textContent = 'Starting your server again…';
    try {
      await ch.request('POST', serverPath);
    } catch (err) {
      // 400/409: already running or starting; the reloaded page follows it from there.
      if (err.status !== 400 && err.status !== 409) {
        alertBox.textContent = err.message;
        alertBox.hidden = false;
        message.textContent = 'Your server could not start.';
        return;
      }
    }
    window.location.reload();
  }));
})();
