// Avatar Agents web client: joins a session through the control API (POST /avatars, or
// POST /token for an existing room), shows the avatar and its captions, and drives the
// avatar's emotion, background and speech. Bundled by esbuild into dist/app.js.
import { ConnectionState, Room, RoomEvent } from 'livekit-client';

import { api, eventsUrl, fetchImageUrl, getApiKey, loadApiKey, setApiKey } from './api.js';
import { avatarMedia, pickAvatar } from './avatar.js';
import { Captions, TOPIC_TRANSCRIPTION } from './captions.js';
import { EventSocket } from './events.js';

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  keyForm: $('key-form'),
  keyInput: $('api-key'),
  video: $('avatar-video'),
  placeholder: $('placeholder'),
  speakingBadge: $('speaking-badge'),
  enableAudio: $('enable-audio'),
  join: $('join'),
  leave: $('leave'),
  mic: $('mic'),
  notice: $('notice'),
  noticeText: $('notice-text'),
  noticeClose: $('notice-close'),
  emotions: $('emotions'),
  intensity: $('intensity'),
  intensityValue: $('intensity-value'),
  backgrounds: $('backgrounds'),
  bgColor: $('bg-color'),
  bgColorApply: $('bg-color-apply'),
  sayForm: $('say-form'),
  sayInput: $('say-input'),
  saySend: $('say-send'),
  interrupt: $('interrupt'),
  captions: $('captions'),
  stateEmotion: $('state-emotion'),
  stateBackground: $('state-background'),
  stateSpeaking: $('state-speaking'),
  stateSession: $('state-session'),
};

const STATUS_TEXT = {
  idle: 'Not connected',
  connecting: 'Connecting…',
  waiting: 'Waiting for the avatar…',
  live: 'Live',
  error: 'Error',
};
const PLACEHOLDER_TEXT = {
  idle: 'Press Join to start a session',
  connecting: 'Connecting…',
  waiting: 'Waiting for the avatar to join…',
  error: 'Could not join',
};
const MAX_EVENTS = 100;
const CLIENT_NAME = 'avatar-agents-web'; // this page, in its participant's `client` attribute

// `?room=NAME` joins an existing room with a LiveKit token only (POST /token); otherwise Join
// creates a session (POST /avatars) with `?avatar=ID` (default "default").
const query = new URLSearchParams(window.location.search);
const JOIN_ROOM = query.get('room');
const AVATAR_ID = query.get('avatar') || 'default';

// Read by the browser check (scripts/browser_check.mjs) and handy in the console.
const demo = {
  room: null,
  state: 'idle',
  mode: JOIN_ROOM ? 'token' : 'session',
  sessionId: null,
  ownsSession: false,
  identity: null,
  avatarIdentity: null,
  agentIdentity: null,
  session: null, // the latest session object from the API (GET /avatars/{id} shape)
  avatarState: { emotion: null, intensity: null, background: null, speaking: false },
  wsStatus: 'closed',
  lastEvent: null,
  events: [],
  lastError: null,
  deletedSessionId: null, // set once Leave has deleted the session
  micEnabled: false,
  emotions: [],
  backgrounds: [],
};
window.avatarDemo = demo;

const captions = new Captions(ui.captions);
const attached = { video: null, audio: null }; // remote tracks attached to the <video>
let events = null; // EventSocket of the current session
let sessionConnected = false; // room.connect() resolved; until then join() reports failures

// --- status and errors ------------------------------------------------------------------

// A session whose avatar has not shown up after this long gets a hint on the stage.
const SLOW_AVATAR_MS = 20_000;
let slowTimer = null;

function setState(state, detail) {
  if (state !== demo.state) {
    clearTimeout(slowTimer);
    if (state === 'waiting') {
      slowTimer = setTimeout(() => {
        if (demo.state !== 'waiting') return;
        ui.placeholder.textContent =
          'Still waiting for the avatar. Is the agent worker running, and not overloaded? ' +
          'Leave and Join again to retry.';
      }, SLOW_AVATAR_MS);
    }
  }
  demo.state = state;
  ui.status.dataset.state = state;
  let text = detail ?? STATUS_TEXT[state];
  if (state === 'live' && demo.sessionId) text = `Live · ${demo.sessionId}`;
  ui.status.textContent = text;
  ui.placeholder.hidden = state === 'live';
  ui.placeholder.textContent = PLACEHOLDER_TEXT[state] ?? '';
  renderControls();
}

function showNotice(text, kind = 'error') {
  ui.noticeText.textContent = text;
  ui.notice.dataset.kind = kind;
  ui.notice.hidden = false;
}

function clearNotice() {
  ui.notice.hidden = true;
  ui.noticeText.textContent = '';
}

// Errors from the API are `{"error": {"code", "message"}}` (ApiError); show them as they come.
function reportError(what, err) {
  const code = err?.code ?? 'error';
  const message = err?.message ?? String(err);
  demo.lastError = { what, code, message, status: err?.status ?? null };
  console.warn(`${what} failed`, err);
  if (err?.status === 401) {
    showKeyForm();
    showNotice(`${what}: the API key is missing or not accepted. Enter it above.`);
    return;
  }
  showNotice(`${what}: ${message}${err?.code ? ` [${code}]` : ''}`);
}

// --- API key ------------------------------------------------------------------------------

function showKeyForm() {
  ui.keyForm.hidden = false;
  ui.keyInput.value = getApiKey() ?? '';
}

ui.keyForm.addEventListener('submit', (event) => {
  event.preventDefault();
  setApiKey(ui.keyInput.value);
  ui.keyInput.value = '';
  if (getApiKey()) ui.keyForm.hidden = true;
  clearNotice();
  loadCatalog();
});

// --- controls ---------------------------------------------------------------------------------

function inSession() {
  return demo.state === 'waiting' || demo.state === 'live';
}

function renderControls() {
  const connected = inSession();
  const busy = demo.state === 'connecting';
  ui.join.disabled = connected || busy;
  ui.leave.disabled = !(connected || busy);
  ui.mic.disabled = !connected;
  const controls = connected && demo.sessionId !== null;
  for (const el of [
    ...ui.emotions.querySelectorAll('button'),
    ...ui.backgrounds.querySelectorAll('button'),
    ui.bgColor,
    ui.bgColorApply,
    ui.sayInput,
    ui.saySend,
    ui.interrupt,
  ]) {
    el.disabled = !controls;
  }
  renderMic();
}

function renderMic() {
  const on = Boolean(demo.room?.localParticipant.isMicrophoneEnabled);
  demo.micEnabled = on;
  ui.mic.setAttribute('aria-pressed', String(on));
  ui.mic.querySelector('.label').textContent = on ? 'Microphone on' : 'Microphone off';
}

function renderAvatarState() {
  const s = demo.avatarState;
  const known = demo.session !== null;
  ui.stateEmotion.textContent = known && s.emotion
    ? `${s.emotion}${s.intensity != null ? ` · ${Number(s.intensity).toFixed(2)}` : ''}`
    : '—';
  ui.stateBackground.textContent = known && s.background ? s.background : '—';
  ui.stateSpeaking.textContent = known ? (s.speaking ? 'yes' : 'no') : '—';
  ui.stateSession.textContent = demo.sessionId ?? '—';
  ui.speakingBadge.hidden = !(known && s.speaking && demo.state === 'live');
  for (const button of ui.emotions.querySelectorAll('button')) {
    button.setAttribute('aria-pressed', String(known && button.dataset.id === s.emotion));
  }
  const bg = s.background ?? '';
  for (const button of ui.backgrounds.querySelectorAll('button')) {
    button.setAttribute('aria-pressed', String(known && button.dataset.id === bg));
  }
  const isColor = known && bg.startsWith('color:');
  ui.bgColorApply.setAttribute('aria-pressed', String(isColor));
  if (isColor && /^color:#[0-9a-f]{6}$/i.test(bg)) ui.bgColor.value = bg.slice(6).toLowerCase();
}

// A session object from the API or the event socket.
function applySession(session, changes) {
  if (session && typeof session === 'object') {
    demo.session = session;
    demo.avatarState = {
      emotion: session.emotion ?? null,
      intensity: session.intensity ?? null,
      background: session.background ?? null,
      speaking: Boolean(session.speaking),
    };
  } else if (changes && typeof changes === 'object') {
    demo.session ??= {};
    Object.assign(demo.avatarState, changes);
  }
  renderAvatarState();
}

function sessionPath(suffix = '') {
  return `/avatars/${encodeURIComponent(demo.sessionId)}${suffix}`;
}

// --- catalog: emotions and backgrounds -----------------------------------------------------

function titleCase(id) {
  return id.replace(/[_-]+/g, ' ').replace(/^\w/, (c) => c.toUpperCase());
}

function chip(id, label, description) {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'chip';
  button.dataset.id = id;
  button.setAttribute('aria-pressed', 'false');
  if (description) button.title = description;
  const text = document.createElement('span');
  text.textContent = label;
  button.append(text);
  return button;
}

function buildEmotions(list) {
  ui.emotions.replaceChildren(
    ...list.map((e) => {
      const button = chip(e.id, titleCase(e.id), e.description);
      button.addEventListener('click', () => setEmotion(e.id));
      return button;
    }),
  );
}

function buildBackgrounds(list) {
  const buttons = [];
  for (const b of list) {
    // "color:#RRGGBB" is a pattern, not a choice: the colour picker sends those.
    if (b.kind === 'color' || b.id.startsWith('color:')) continue;
    const button = chip(b.id, titleCase(b.id), b.description);
    if (b.kind === 'image' && b.url) {
      const img = document.createElement('img');
      img.alt = '';
      img.className = 'thumb';
      button.prepend(img);
      fetchImageUrl(b.url)
        .then((src) => {
          img.src = src;
        })
        .catch(() => img.remove());
    } else {
      const swatch = document.createElement('span');
      swatch.className = `thumb thumb-${b.id}`;
      swatch.setAttribute('aria-hidden', 'true');
      button.prepend(swatch);
    }
    button.addEventListener('click', () => setBackground(b.id));
    buttons.push(button);
  }
  ui.backgrounds.replaceChildren(...buttons);
}

async function loadCatalog() {
  try {
    const [emotions, backgrounds] = await Promise.all([api('/emotions'), api('/backgrounds')]);
    demo.emotions = (emotions?.emotions ?? []).map((e) => e.id);
    demo.backgrounds = (backgrounds?.backgrounds ?? []).map((b) => b.id);
    buildEmotions(emotions?.emotions ?? []);
    buildBackgrounds(backgrounds?.backgrounds ?? []);
    renderControls();
    renderAvatarState();
  } catch (err) {
    reportError('Loading emotions and backgrounds', err);
  }
}

// --- controls → API --------------------------------------------------------------------------

async function control(what, path, body) {
  if (!demo.sessionId) return null;
  try {
    return await api(sessionPath(path), { method: 'POST', body });
  } catch (err) {
    reportError(what, err);
    return null;
  }
}

async function setEmotion(emotion) {
  const intensity = Number(ui.intensity.value);
  const session = await control('Emotion', '/emotion', { emotion, intensity });
  if (session) applySession(session);
}

async function setBackground(backgroundId) {
  const session = await control('Background', '/background', { background_id: backgroundId });
  if (session) applySession(session);
}

function setColorBackground() {
  return setBackground(`color:${ui.bgColor.value.toLowerCase()}`);
}

ui.intensity.addEventListener('input', () => {
  ui.intensityValue.textContent = Number(ui.intensity.value).toFixed(2);
});
// A new intensity applies to the emotion shown now.
ui.intensity.addEventListener('change', () => {
  const emotion = demo.avatarState.emotion;
  if (inSession() && emotion) setEmotion(emotion);
});
ui.bgColor.addEventListener('change', () => {
  if (inSession()) setColorBackground();
});
ui.bgColorApply.addEventListener('click', setColorBackground);

ui.sayForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = ui.sayInput.value.trim();
  if (!text || !demo.sessionId) return;
  ui.saySend.disabled = true;
  const answer = await control('Say', '/say', { text });
  if (answer) ui.sayInput.value = '';
  renderControls();
  ui.sayInput.focus();
});

ui.interrupt.addEventListener('click', async () => {
  const session = await control('Interrupt', '/interrupt');
  if (session) applySession(session);
});

// --- events: WS /ws/{session_id} ----------------------------------------------------------

function onEvent(msg) {
  demo.lastEvent = msg;
  demo.events.push(msg);
  if (demo.events.length > MAX_EVENTS) demo.events.shift();
  switch (msg.type) {
    case 'state':
    case 'state_changed':
      applySession(msg.session, msg.changes);
      break;
    case 'speaking_started':
    case 'speaking_stopped':
      demo.avatarState.speaking = msg.type === 'speaking_started';
      if (demo.session) demo.session.speaking = demo.avatarState.speaking;
      renderAvatarState();
      break;
    case 'avatar_connected':
    case 'avatar_disconnected':
      if (demo.session) demo.session.avatar_connected = msg.type === 'avatar_connected';
      refreshAvatar();
      break;
    case 'error':
      showNotice(`${msg.message ?? 'error'}${msg.code ? ` [${msg.code}]` : ''}`);
      break;
    case 'session_ended':
      if (demo.room) {
        const room = demo.room;
        endSession();
        setState('idle', 'Session ended');
        room.disconnect().catch(() => {});
      }
      break;
    default:
      break;
  }
}

function openEvents(sessionId) {
  events?.close();
  events = new EventSocket(() => eventsUrl(sessionId), {
    onMessage: onEvent,
    onStatus: (status) => {
      demo.wsStatus = status;
      if (status === 'unavailable') {
        showNotice('Live session events are unavailable: the state shown may be stale.', 'info');
      }
    },
  });
}

// --- room and media ---------------------------------------------------------------------------

function swapTrack(kind, track) {
  if (attached[kind] === track) return;
  attached[kind]?.detach(ui.video);
  attached[kind] = track;
  // Audio and video share one element so they play (and start/stop) together.
  track?.attach(ui.video);
}

function refreshAvatar() {
  const room = demo.room;
  if (!room) return;
  const picked = pickAvatar(room.remoteParticipants.values());
  demo.avatarIdentity = picked.avatar?.identity ?? null;
  demo.agentIdentity = picked.agent?.identity ?? null;
  const media = avatarMedia(picked);
  swapTrack('video', media.video);
  swapTrack('audio', media.audio);
  if (room.state === ConnectionState.Connected && sessionConnected) {
    setState(attached.video ? 'live' : 'waiting');
  }
  renderAvatarState();
}

function detachAll() {
  swapTrack('video', null);
  swapTrack('audio', null);
  ui.video.srcObject = null;
  ui.enableAudio.hidden = true;
}

function wireRoom(room) {
  // Events from a room we already left must not touch the page.
  const ifCurrent =
    (fn) =>
    (...args) => {
      if (demo.room === room) fn(...args);
    };
  room
    .on(RoomEvent.ParticipantConnected, ifCurrent(refreshAvatar))
    .on(RoomEvent.ParticipantDisconnected, ifCurrent(refreshAvatar))
    // A worker's lk.publish_on_behalf may arrive after it joined: pick again then.
    .on(RoomEvent.ParticipantAttributesChanged, ifCurrent(refreshAvatar))
    .on(RoomEvent.TrackSubscribed, ifCurrent(refreshAvatar))
    .on(RoomEvent.TrackUnsubscribed, ifCurrent(refreshAvatar))
    .on(RoomEvent.LocalTrackPublished, ifCurrent(renderMic))
    .on(RoomEvent.LocalTrackUnpublished, ifCurrent(renderMic))
    .on(RoomEvent.TrackMuted, ifCurrent(renderMic))
    .on(RoomEvent.TrackUnmuted, ifCurrent(renderMic))
    .on(RoomEvent.Reconnecting, ifCurrent(() => setState('connecting', 'Reconnecting…')))
    .on(RoomEvent.Reconnected, ifCurrent(refreshAvatar))
    .on(
      RoomEvent.AudioPlaybackStatusChanged,
      ifCurrent(() => {
        ui.enableAudio.hidden = room.canPlaybackAudio;
      }),
    )
    .on(
      RoomEvent.Disconnected,
      ifCurrent(() => {
        if (!sessionConnected) return; // a failed connect: join() shows the error
        endSession();
        setState('idle', 'Disconnected');
      }),
    );
  room.registerTextStreamHandler(TOPIC_TRANSCRIPTION, (reader, participant) =>
    captions.onStream(reader, participant, room.localParticipant.identity),
  );
}

function endSession() {
  events?.close();
  events = null;
  demo.room = null;
  sessionConnected = false;
  demo.avatarIdentity = null;
  demo.agentIdentity = null;
  demo.wsStatus = 'closed';
  detachAll();
  captions.clear();
}

function deleteSession(sessionId, { keepalive = false } = {}) {
  return api(`/avatars/${encodeURIComponent(sessionId)}`, { method: 'DELETE', keepalive });
}

// livekit-server tells the others about a participant that publishes nothing only every 3 s,
// but about an attribute change at once. Setting one as we join lets the agent link to us (and
// take our typed messages) before its first words rather than seconds into them.
function announce(room) {
  room.localParticipant.setAttributes({ client: CLIENT_NAME }).catch((err) => {
    console.warn('could not announce this page to the room', err);
  });
}

async function join() {
  if (demo.room) return;
  clearNotice();
  const room = new Room();
  demo.room = room;
  wireRoom(room);
  // Browsers unlock audio only inside a user gesture, so this must run before any await.
  room.startAudio().catch(() => {});
  demo.session = null;
  demo.sessionId = null;
  setState('connecting');
  let created = null;
  try {
    let url;
    let token;
    if (JOIN_ROOM) {
      const answer = await api('/token', { method: 'POST', body: { room: JOIN_ROOM } });
      ({ url, token } = answer);
      demo.sessionId = answer.room;
      demo.identity = answer.identity;
      demo.ownsSession = false;
    } else {
      const answer = await api('/avatars', { method: 'POST', body: { avatar_id: AVATAR_ID } });
      created = answer.session_id;
      url = answer.livekit_url;
      token = answer.token;
      demo.sessionId = answer.session_id;
      demo.identity = answer.identity;
      demo.ownsSession = true;
    }
    if (demo.room !== room) {
      // Leave was pressed while the session was being created.
      if (created) deleteSession(created).catch(() => {});
      return;
    }
    openEvents(demo.sessionId);
    await room.connect(url, token);
    if (demo.room !== room) return; // Leave was pressed while connecting
    announce(room);
    sessionConnected = true;
    setState('waiting');
    refreshAvatar();
  } catch (err) {
    if (demo.room !== room) return;
    endSession();
    setState('error', 'Could not join');
    reportError('Join', err);
    room.disconnect().catch(() => {});
    if (created) deleteSession(created).catch(() => {});
  }
}

async function leave() {
  const room = demo.room;
  if (!room) return;
  const sessionId = demo.ownsSession ? demo.sessionId : null;
  endSession();
  setState('idle');
  await room.disconnect().catch(() => {});
  if (sessionId) {
    try {
      await deleteSession(sessionId);
      demo.deletedSessionId = sessionId;
    } catch (err) {
      if (err?.status !== 404) reportError('Leave', err);
    }
  }
}

async function toggleMic() {
  const room = demo.room;
  if (!room) return;
  const enable = !room.localParticipant.isMicrophoneEnabled;
  ui.mic.disabled = true;
  try {
    await room.localParticipant.setMicrophoneEnabled(enable);
  } catch (err) {
    reportError('Microphone', err);
  } finally {
    renderControls();
  }
}

ui.join.addEventListener('click', join);
ui.leave.addEventListener('click', leave);
ui.mic.addEventListener('click', toggleMic);
ui.noticeClose.addEventListener('click', clearNotice);
ui.enableAudio.addEventListener('click', () => {
  demo.room?.startAudio().catch(() => {});
});
window.addEventListener('pagehide', () => {
  if (!demo.room) return;
  const sessionId = demo.ownsSession ? demo.sessionId : null;
  demo.room.disconnect();
  // keepalive lets the request outlive the page.
  if (sessionId) deleteSession(sessionId, { keepalive: true }).catch(() => {});
});

// --- start --------------------------------------------------------------------------------------

if (!loadApiKey()) showKeyForm();
if (JOIN_ROOM) ui.join.textContent = `Join ${JOIN_ROOM}`;
setState('idle');
renderAvatarState();
loadCatalog();
