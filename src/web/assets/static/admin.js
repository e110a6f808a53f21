// codehub admin page: list, add, delete users; toggle admin; reset passwords; start/stop servers.
(function () {
  'use strict';
  const ch = window.codehub;
  const el = ch.el;
  const LIMIT = 50;
  const tbody = document.querySelector('#users tbody');
  const status = document.getElementById('admin-status');
  const range = document.getElementById('users-range');
  const prev = document.getElementById('users-prev');
  const next = document.getElementById('users-next');
  const form = document.getElementById('add-user');
  const nameInput = document.getElementById('add-username');
  const adminInput = document.getElementById('add-admin');
  let offset = 0;
  let refreshTimer = 0;

  function userPath(name) {
    return '/users/' + encodeURIComponent(name);
  }

  function serverState(u) {
    if (u.pending === 'spawn') return 'starting';
    if (u.pending === 'stop') return 'stopping';
    return u.server ? 'running' : 'stopped';
  }

  function fail(err) {
    ch.setStatus(status, err.message, 'error');
  }

  // Runs an API call for one row's button, then reloads the page of users.
  function action(button, fn) {
    return ch.busy(button, async () => {
      try {
        const done = await fn();
        if (done) ch.setStatus(status, done, 'ok');
      } catch (err) {
        fail(err);
      }
      await load();
    });
  }

  function row(u) {
    const self = u.name === ch.user;
    const state = serverState(u);
    const moving = state === 'starting' || state === 'stopping';
    const path = userPath(u.name);

    const toggleAdmin = el('button', {
      type: 'button', class: 'btn btn-small',
      disabled: self && u.admin,
      title: self && u.admin ? 'You cannot remove your own admin rights' : null,
      onclick: (e) => action(e.currentTarget, async () => {
        await ch.api('PATCH', path, { admin: !u.admin });
        return u.admin ? u.name + ' is no longer an admin.' : u.name + ' is now an admin.';
      }),
    }, u.admin ? 'Remove admin' : 'Make admin');

    const reset = el('button', {
      type: 'button', class: 'btn btn-small',
      onclick: (e) => {
        if (!window.confirm('Reset the password of ' + u.name + '? Their next login sets a new one.')) return;
        action(e.currentTarget, async () => {
          await ch.api('PATCH', path, { password: null });
          return u.name + '’s password was reset: their next login sets a new one.';
        });
      },
    }, 'Reset password');

    const del = el('button', {
      type: 'button', class: 'btn btn-small btn-danger',
      disabled: self,
      title: self ? 'You cannot delete yourself' : null,
      onclick: (e) => {
        if (!window.confirm('Delete the user ' + u.name + '? Their server is stopped and their account removed.')) return;
        action(e.currentTarget, async () => {
          await ch.api('DELETE', path);
          return 'Deleted ' + u.name + '.';
        });
      },
    }, 'Delete');

    const server = el('button', {
      type: 'button', class: 'btn btn-small', disabled: moving,
      onclick: (e) => action(e.currentTarget, async () => {
        if (u.server) {
          const res = await ch.request('DELETE', path + '/server');
          return res.status === 202 ? 'Stopping the server of ' + u.name + '…' : 'Stopped the server of ' + u.name + '.';
        }
        const res = await ch.request('POST', path + '/server');
        return res.status === 202 ? 'Starting the server of ' + u.name + '…' : 'Started the server of ' + u.name + '.';
      }),
    }, u.server ? 'Stop' : 'Start');

    return el('tr', null,
      el('th', { scope: 'row' }, u.name, self ? el('span', { class: 'you' }, '(you)') : null),
      el('td', null, u.admin ? el('span', { class: 'badge', dataset: { status: 'admin' } }, 'admin')
        : el('span', { class: 'muted' }, 'user')),
      el('td', null, ch.time(u.created, '—')),
      el('td', null, ch.time(u.last_activity)),
      el('td', null, el('div', { class: 'actions' },
        el('span', { class: 'badge', dataset: { status: state } }, state), server)),
      el('td', null, el('div', { class: 'actions' }, toggleAdmin, reset, del)));
  }

  async function load() {
    clearTimeout(refreshTimer);
    let data;
    try {
      data = await ch.api('GET', '/users?offset=' + offset + '&limit=' + LIMIT, undefined,
        { 'Accept': 'application/jupyterhub-pagination+json' });
    } catch (err) {
      ch.setStatus(status, 'Could not load the users: ' + err.message, 'error');
      tbody.replaceChildren(el('tr', null, el('td', { colspan: 6, class: 'empty' }, 'No users to show.')));
      return;
    }
    // A hub without pagination support answers with a plain list.
    const items = Array.isArray(data) ? data : data.items || [];
    const page = (!Array.isArray(data) && data._pagination) || { total: items.length, next: null };
    const total = typeof page.total === 'number' ? page.total : items.length;
    if (items.length === 0 && offset > 0) {
      // The last user of the last page was deleted: step back a page.
      offset = Math.max(0, offset - LIMIT);
      return load();
    }
    tbody.replaceChildren(...(items.length ? items.map(row)
      : [el('tr', null, el('td', { colspan: 6, class: 'empty' }, 'No users yet.'))]));
    range.textContent = items.length ? (offset + 1) + '–' + (offset + items.length) + ' of ' + total : '';
    prev.disabled = offset === 0;
    next.disabled = page.next === undefined ? offset + items.length >= total : !page.next;
    // Keep following servers that are starting or stopping.
    if (items.some((u) => u.pending)) refreshTimer = setTimeout(load, 2000);
  }

  prev.addEventListener('click', () => {
    offset = Math.max(0, offset - LIMIT);
    load();
  });
  next.addEventListener('click', () => {
    offset += LIMIT;
    load();
  });

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = nameInput.value.trim().toLowerCase();
    if (!name) return;
    const button = form.querySelector('button[type="submit"]');
    ch.busy(button, async () => {
      try {
        await ch.api('POST', userPath(name), { admin: adminInput.checked });
        form.reset();
        ch.setStatus(status, 'Added ' + name + '. Their first login sets their password.', 'ok');
      } catch (err) {
        fail(err);
        return;
      }
      await load();
    });
  });

  const cullForm = document.getElementById('cull-idle');
  cullForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const minutes = Math.max(0, Math.floor(Number(document.getElementById('cull-minutes').value) || 0));
    if (!window.confirm('Stop every server idle for at least ' + minutes + ' minutes?')) return;
    const button = cullForm.querySelector('button[type="submit"]');
    ch.busy(button, async () => {
      try {
        const res = await ch.api('POST', '/cull', { idle_seconds: minutes * 60 });
        ch.setStatus(status, 'Stopping ' + res.stopped + (res.stopped === 1 ? ' server.' : ' servers.'), 'ok');
      } catch (err) {
        fail(err);
        return;
      }
      await load();
    });
  });

  load();
})();
