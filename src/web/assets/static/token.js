// codehub tokens page: create (shown once), list and revoke my API tokens.
(function () {
  'use strict';
  const ch = window.codehub;
  const el = ch.el;
  const path = '/users/' + encodeURIComponent(ch.user) + '/tokens';
  const tbody = document.querySelector('#tokens tbody');
  const status = document.getElementById('token-status');
  const form = document.getElementById('token-form');
  const note = document.getElementById('token-note');
  const expires = document.getElementById('token-expires');
  const scope = document.getElementById('token-scope');
  const box = document.getElementById('new-token');
  const value = document.getElementById('new-token-value');
  const copy = document.getElementById('copy-token');
  const dismiss = document.getElementById('dismiss-token');

  function expiry(t) {
    const at = t.expires_at ? new Date(t.expires_at) : null;
    if (at && at.getTime() <= Date.now()) {
      return el('span', { class: 'badge', dataset: { status: 'expired' }, title: at.toLocaleString() }, 'expired');
    }
    return ch.time(t.expires_at);
  }

  function row(t) {
    const label = (t.prefix || '') + '…';
    return el('tr', null,
      el('th', { scope: 'row' }, el('code', null, label)),
      el('td', null, t.note ? t.note : el('span', { class: 'muted' }, '—')),
      el('td', null, (t.scopes || []).join(', ')),
      el('td', null, ch.time(t.created, '—')),
      el('td', null, expiry(t)),
      el('td', null, ch.time(t.last_activity)),
      el('td', null, el('button', {
        type: 'button', class: 'btn btn-small btn-danger', 'aria-label': 'Revoke token ' + label,
        onclick: (e) => {
          if (!window.confirm('Revoke the token ' + label + '? Anything using it stops working.')) return;
          ch.busy(e.currentTarget, async () => {
            try {
              await ch.api('DELETE', path + '/' + encodeURIComponent(t.id));
              ch.setStatus(status, 'Revoked the token ' + label, 'ok');
            } catch (err) {
              ch.setStatus(status, err.message, 'error');
            }
            await load();
          });
        },
      }, 'Revoke')));
  }

  async function load() {
    let tokens;
    try {
      tokens = (await ch.api('GET', path)).api_tokens || [];
    } catch (err) {
      ch.setStatus(status, 'Could not load your tokens: ' + err.message, 'error');
      tbody.replaceChildren(el('tr', null, el('td', { colspan: 7, class: 'empty' }, 'No tokens to show.')));
      return;
    }
    tbody.replaceChildren(...(tokens.length ? tokens.map(row)
      : [el('tr', null, el('td', { colspan: 7, class: 'empty' }, 'You have no API tokens.'))]));
  }

  function hideToken() {
    value.value = '';
    box.hidden = true;
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const button = form.querySelector('button[type="submit"]');
    ch.busy(button, async () => {
      hideToken();
      try {
        const t = await ch.api('POST', path, {
          note: note.value.trim(),
          expires_in: expires.value === '' ? null : Number(expires.value),
          scopes: [scope.value],
        });
        value.value = t.token || '';
        box.hidden = false;
        value.focus();
        value.select();
        form.reset();
        ch.setStatus(status, '', '');
      } catch (err) {
        ch.setStatus(status, 'Could not create the token: ' + err.message, 'error');
        return;
      }
      await load();
    });
  });

  copy.addEventListener('click', async () => {
    value.select();
    let ok = false;
    try {
      await navigator.clipboard.writeText(value.value);
      ok = true;
    } catch (e) {
      // The async clipboard needs a secure context (https or localhost); fall back.
      ok = document.execCommand('copy');
    }
    copy.textContent = ok ? 'Copied' : 'Press Ctrl+C to copy';
    setTimeout(() => { copy.textContent = 'Copy'; }, 2000);
  });

  dismiss.addEventListener('click', hideToken);

  // Only admins may create admin-scoped tokens; say so up front rather than after a 403.
  // The page says whether I am one (data-admin); else ask the API who I am.
  function limitScope(admin) {
    const option = scope.querySelector('option[value="admin"]');
    if (admin || !option) return;
    option.disabled = true;
    option.textContent = 'admin (admins only)';
  }
  if (scope.dataset.admin === 'true' || scope.dataset.admin === 'false') {
    limitScope(scope.dataset.admin === 'true');
  } else {
    ch.api('GET', '/user').then((me) => limitScope(!me || me.admin), () => {});
  }

  load();
})();
