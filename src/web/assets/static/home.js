// codehub home page: start / stop my server. CSS shows the right buttons from
// #server[data-status]; this script keeps that attribute in step with the API.
(function () {
  'use strict';
  const ch = window.codehub;
  const section = document.getElementById('server');
  if (!section) return;
  const user = section.dataset.user;
  const path = '/users/' + encodeURIComponent(user);
  const badge = document.getElementById('server-status');
  const lastActivity = document.getElementById('last-activity');
  const startBtn = document.getElementById('start-server');
  const stopBtn = document.getElementById('stop-server');
  const message = document.getElementById('server-message');
  let polling = false;

  function setState(state) {
    section.dataset.status = state;
    badge.dataset.status = state;
    badge.textContent = state;
    const moving = state === 'starting' || state === 'stopping';
    startBtn.disabled = moving;
    stopBtn.disabled = moving;
  }

  function stateOf(u) {
    if (u.pending === 'spawn') return 'starting';
    if (u.pending === 'stop') return 'stopping';
    return u.server ? 'running' : 'stopped';
  }

  function explain(action, err) {
    if (err.status === 404 || err.status === 501) {
      return action + ' is not available on this hub yet (' + err.message + ')';
    }
    return action + ' failed: ' + err.message;
  }

  async function refresh() {
    const u = await ch.api('GET', path);
    const state = stateOf(u);
    setState(state);
    lastActivity.replaceChildren(ch.time(u.last_activity));
    return state;
  }

  // Follows a pending start or stop until it settles (at most about two minutes).
  async function poll() {
    if (polling) return;
    polling = true;
    try {
      for (let i = 0; i < 120; i++) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        const state = await refresh();
        if (state !== 'starting' && state !== 'stopping') {
          ch.setStatus(message, state === 'running' ? 'Your server is running.' : 'Your server is stopped.', 'ok');
          return;
        }
      }
      ch.setStatus(message, 'Still waiting for the server: reload the page to check again.', '');
    } catch (err) {
      ch.setStatus(message, explain('Checking the server', err), 'error');
    } finally {
      polling = false;
    }
  }

  // Both buttons stay disabled while a call runs; setState then re-enables what fits.
  async function act(fn) {
    startBtn.disabled = true;
    stopBtn.disabled = true;
    try {
      await fn();
    } finally {
      setState(section.dataset.status);
    }
  }

  // Starting shows the progress page, which starts the server and opens it when ready.
  // A chosen profile (kubernetes spawner) is sent with the start first: the progress page
  // then follows that start.
  const profile = document.getElementById('profile');
  startBtn.addEventListener('click', () => act(async () => {
    ch.setStatus(message, 'Starting your server…', '');
    if (profile && profile.value) {
      try {
        await ch.request('POST', path + '/server', {profile: profile.value});
      } catch (err) {
        ch.setStatus(message, explain('Starting the server', err), 'error');
        return;
      }
    }
    window.location.assign(ch.base + '/hub/spawn-pending/' + encodeURIComponent(user));
  }));

  stopBtn.addEventListener('click', () => act(async () => {
    ch.setStatus(message, 'Stopping your server…', '');
    try {
      const res = await ch.request('DELETE', path + '/server');
      if (res.status === 202) {
        setState('stopping');
        poll();
        return;
      }
      setState('stopped');
      ch.setStatus(message, 'Your server is stopped.', 'ok');
    } catch (err) {
      ch.setStatus(message, explain('Stopping the server', err), 'error');
    }
  }));

  setState(section.dataset.status || 'stopped');
  if (section.dataset.status === 'starting' || section.dataset.status === 'stopping') poll();
})();
