// The chat page, built on @gim/sdk: GimClient keeps the connection (sign-in, heartbeats, reconnect
// to the next node, RECONNECT/KICKED) and delivers every message once in order; a MessageView
// keeps the conversations, saved in localStorage with the last seqs, so a reload shows the history
// and syncs only what it missed.
import { GimClient, MessageView, ReceiverType, noticeOf, textOf } from '@gim/sdk';

const $ = (id) => document.getElementById(id);
const MAX_PER_CONVERSATION = 500;
const state = { cfg: null, client: null, me: null, view: null, saved: null, current: null, groups: [], unread: {} };

function showError(e) {
  const el = $('error');
  el.textContent = e && e.message ? e.message : String(e);
  el.hidden = false;
}
function clearError() { $('error').hidden = true; }
function setStatus(s) { $('status').textContent = s; }

async function getJson(url) {
  const r = await fetch(url);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `${url}: HTTP ${r.status}`);
  return body;
}

// What survives a reload: the view, the user list's last seq, each large group's last group seq.
function storeKey() { return `gim-demo:${state.cfg.app_id}:${state.me.user_id}`; }
function loadStore() {
  try {
    const s = JSON.parse(localStorage.getItem(storeKey()));
    if (s && s.view) return { lastSeq: s.lastSeq, groups: s.groups || {}, view: MessageView.fromJSON(s.view, { maxPerConversation: MAX_PER_CONVERSATION }) };
  } catch (e) {
    console.warn('stored conversations unreadable, starting afresh', e);
  }
  return { lastSeq: '0', groups: {}, view: new MessageView(state.me.user_id, { maxPerConversation: MAX_PER_CONVERSATION }) };
}
function saveStore() {
  const c = state.client;
  const groups = {};
  for (const g of state.groups) if (g.large && c.groupSeq(g.group_id) !== undefined) groups[g.group_id] = c.groupSeq(g.group_id).toString();
  localStorage.setItem(storeKey(), JSON.stringify({ lastSeq: c.lastSeq.toString(), groups, view: state.view.toJSON() }));
}

function convTitle(key) {
  const [kind, id] = key.split(':');
  if (kind === 'u') return `user ${id}`;
  const g = state.groups.find((x) => x.group_id === id);
  return g ? `${g.name} (group ${id})` : `group ${id}`;
}

function onMessage(m) {
  // Not persisted (seq 0) messages are not kept; everything else the view keeps exactly once.
  const conv = state.view.add(m);
  if (!conv) return;
  saveStore();
  // A notice (read position, receipt, recall, edit, delete) changes what is shown, never adds unread.
  if (conv !== state.current && !noticeOf(m)) state.unread[conv] = (state.unread[conv] || 0) + 1;
  render();
}

function render() {
  const convs = [...(state.view ? state.view.conversations() : [])].reverse();
  if (state.current && !convs.includes(state.current)) convs.unshift(state.current);
  const ul = $('convs');
  ul.replaceChildren();
  for (const key of convs) {
    const li = document.createElement('li');
    li.dataset.conv = key;
    li.textContent = convTitle(key);
    if (state.unread[key]) {
      const b = document.createElement('span');
      b.className = 'unread';
      b.textContent = state.unread[key];
      li.append(b);
    }
    if (key === state.current) li.className = 'active';
    li.onclick = () => openConv(key);
    ul.append(li);
  }
  const gl = $('groups');
  gl.replaceChildren();
  for (const g of state.groups) {
    const li = document.createElement('li');
    li.dataset.conv = `g:${g.group_id}`;
    li.textContent = `${g.name} (${g.large ? 'large, ' : ''}${g.members} members)`;
    li.onclick = () => openConv(`g:${g.group_id}`);
    gl.append(li);
  }
  const ol = $('messages');
  ol.replaceChildren();
  $('title').textContent = state.current ? convTitle(state.current) : 'no conversation selected';
  if (!state.current || !state.view) return;
  for (const m of state.view.messages(state.current)) {
    const li = document.createElement('li');
    li.dataset.seq = m.seq.toString();
    if (m.senderId === state.view.self) li.className = 'mine';
    const meta = document.createElement('span');
    meta.className = 'meta';
    meta.textContent = `user ${m.senderId} · seq ${m.seq}`;
    const body = document.createElement('span');
    body.className = 'text';
    body.textContent = textOf(m) ?? `<type ${m.messageBody ? m.messageBody.messageType : '?'}>`;
    li.append(body, meta);
    ol.append(li);
  }
  ol.scrollTop = ol.scrollHeight;
}

function openConv(key) {
  state.current = key;
  delete state.unread[key];
  render();
  $('text').focus();
}

async function signIn() {
  clearError();
  const user = $('user').value;
  const nodeIndex = Number($('node').value);
  const devKey = `gim-demo-device:${state.cfg.app_id}:${user}`;
  const tok = await getJson(`/api/token?user=${user}&device=${localStorage.getItem(devKey) || 0}`);
  localStorage.setItem(devKey, String(tok.device_id));
  state.me = { user_id: String(tok.user_id), device_id: String(tok.device_id) };
  const stored = loadStore();
  state.view = stored.view;
  const client = new GimClient({
    endpoints: state.cfg.endpoints,
    firstEndpoint: nodeIndex,
    credentials: { appId: tok.app_id, userId: tok.user_id, deviceId: tok.device_id, token: tok.token },
    startSeq: stored.lastSeq,
  });
  state.client = client;
  client.on('message', onMessage);
  client.on('connected', ({ endpoint }) => setStatus(`signed in as user ${user} on ${endpoint}`));
  client.on('disconnected', ({ reason, retryInMs }) => setStatus(`disconnected (${reason}), reconnecting in ${retryInMs} ms`));
  client.on('reconnect', ({ reason }) => setStatus(`node draining (${reason}), moving`));
  client.on('kicked', ({ reason }) => { showError(new Error(`signed out: this device signed in elsewhere (${reason})`)); toggle(false); });
  client.on('failed', ({ error }) => { showError(error); toggle(false); });
  client.on('error', ({ error }) => showError(error));
  setStatus(`connecting to ${state.cfg.endpoints[nodeIndex]}`);
  client.start();
  toggle(true);
  render();
  getJson(`/api/groups?user=${user}&device=${tok.device_id}`)
    .then((g) => {
      state.groups = g.groups;
      // Large groups are read from their own list: follow each from where this page left off.
      for (const x of state.groups) if (x.large) client.trackLargeGroup(x.group_id, stored.groups[x.group_id] || 0).catch(showError);
      render();
    })
    .catch(showError);
}

function toggle(on) {
  $('signin').disabled = on;
  $('signout').disabled = !on;
  $('text').disabled = !on;
  $('send').disabled = !on;
  $('user').disabled = on;
  $('node').disabled = on;
}

async function send(ev) {
  ev.preventDefault();
  const text = $('text').value.trim();
  if (!text || !state.current) { if (!state.current) showError(new Error('pick a conversation first')); return; }
  const [kind, id] = state.current.split(':');
  let rt = ReceiverType.USER;
  if (kind === 'g') {
    const g = state.groups.find((x) => x.group_id === id);
    rt = g && g.large ? ReceiverType.LARGE_GROUP : ReceiverType.NORMAL_GROUP;
  }
  try {
    clearError();
    await state.client.sendText(rt, id, text);
    $('text').value = '';
  } catch (e) {
    showError(e);
  }
}

async function main() {
  state.cfg = await getJson('/api/config');
  for (const u of state.cfg.users) $('user').append(new Option(`user ${u}`, String(u)));
  state.cfg.endpoints.forEach((e, i) => $('node').append(new Option(e, String(i))));
  $('signin').onclick = () => signIn().catch(showError);
  $('signout').onclick = () => { state.client.close(); setStatus('signed out'); toggle(false); };
  $('compose').onsubmit = send;
  $('newchat').onsubmit = (ev) => { ev.preventDefault(); const p = $('peer').value; if (p) openConv(`u:${p}`); };
  // ?user=2&node=1 preselects and signs in (used by the browser test and handy for demos).
  const q = new URLSearchParams(location.search);
  if (q.get('user')) $('user').value = q.get('user');
  if (q.get('node')) $('node').value = q.get('node');
  if (q.get('user')) await signIn();
}

main().catch(showError);
