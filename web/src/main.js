// The chat page: signs in through the demo server's token API, keeps conversations (1:1 and groups)
// in localStorage with the last seq, so a reload shows the history and syncs only what it missed.
import { Session } from './session.js';
import { ReceiverType } from './proto.js';

const $ = (id) => document.getElementById(id);
const MAX_STORED = 500;
const state = { cfg: null, session: null, me: null, store: null, current: null, groups: [], unread: {} };

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

function storeKey() { return `gim-demo:${state.cfg.app_id}:${state.me.user_id}`; }
function loadStore() {
  try { return JSON.parse(localStorage.getItem(storeKey())) || { lastSeq: '0', messages: [] }; }
  catch { return { lastSeq: '0', messages: [] }; }
}
function saveStore() {
  state.store.messages = state.store.messages.slice(-MAX_STORED);
  localStorage.setItem(storeKey(), JSON.stringify(state.store));
}

function convOf(m) {
  if (m.receiver_type === ReceiverType.USER) {
    const peer = m.sender_id === state.me.user_id ? m.receiver_id : m.sender_id;
    return `u:${peer}`;
  }
  return `g:${m.receiver_id}`;
}

function convTitle(key) {
  const [kind, id] = key.split(':');
  if (kind === 'u') return `user ${id}`;
  const g = state.groups.find((x) => x.group_id === id);
  return g ? `${g.name} (group ${id})` : `group ${id}`;
}

function onMessage(m) {
  const text = m.message_body && m.message_body.message_content && m.message_body.message_content.text
    ? m.message_body.message_content.text.text : `<type ${m.message_body ? m.message_body.message_type : '?'}>`;
  const item = {
    seq: m.seq, message_id: m.message_id, sender_id: m.sender_id, receiver_type: m.receiver_type,
    receiver_id: m.receiver_id, text, send_time: m.send_time, conv: convOf(m),
  };
  if (m.seq !== '0') {
    state.store.messages.push(item);
    if (m.receiver_type !== ReceiverType.LARGE_GROUP) state.store.lastSeq = m.seq;
    saveStore();
  }
  if (item.conv !== state.current) state.unread[item.conv] = (state.unread[item.conv] || 0) + 1;
  render();
}

function render() {
  const convs = new Map();
  for (const m of state.store ? state.store.messages : []) convs.set(m.conv, m);
  if (state.current && !convs.has(state.current)) convs.set(state.current, null);
  const ul = $('convs');
  ul.replaceChildren();
  for (const key of convs.keys()) {
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
  if (!state.current || !state.store) return;
  for (const m of state.store.messages.filter((x) => x.conv === state.current)) {
    const li = document.createElement('li');
    li.dataset.seq = m.seq;
    if (m.sender_id === state.me.user_id) li.className = 'mine';
    const meta = document.createElement('span');
    meta.className = 'meta';
    meta.textContent = `user ${m.sender_id} · seq ${m.seq}`;
    const body = document.createElement('span');
    body.className = 'text';
    body.textContent = m.text;
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
  state.store = loadStore();
  state.session = new Session({
    endpoints: state.cfg.endpoints,
    nodeIndex,
    creds: { app_id: String(tok.app_id), user_id: String(tok.user_id), device_id: String(tok.device_id), token: tok.token },
    lastSeq: state.store.lastSeq,
    onMessage,
    onStatus: setStatus,
    onError: showError,
    onKicked: (r) => { showError(new Error(`signed out: this device signed in elsewhere (${r})`)); toggle(false); },
  });
  state.session.start();
  toggle(true);
  render();
  getJson(`/api/groups?user=${user}&device=${tok.device_id}`)
    .then((g) => { state.groups = g.groups; render(); })
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
    await state.session.sendText(rt, id, text);
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
  $('signout').onclick = () => { state.session.stop(); toggle(false); };
  $('compose').onsubmit = send;
  $('newchat').onsubmit = (ev) => { ev.preventDefault(); const p = $('peer').value; if (p) openConv(`u:${p}`); };
  // ?user=2&node=1 preselects and signs in (used by the browser test and handy for demos).
  const q = new URLSearchParams(location.search);
  if (q.get('user')) $('user').value = q.get('user');
  if (q.get('node')) $('node').value = q.get('node');
  if (q.get('user')) await signIn();
}

main().catch(showError);
