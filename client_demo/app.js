// Avatar Agents demo client. No build step: livekit-client's UMD build defines
// `window.LivekitClient` before this script runs.
(() => {
  'use strict';

  const PUBLISH_ON_BEHALF = 'lk.publish_on_behalf';
  const ATTR_SEGMENT_ID = 'lk.segment_id';
  const TOPIC_CHAT = 'lk.chat';
  const TOPIC_TRANSCRIPTION = 'lk.transcription';
  const MAX_CAPTIONS = 50;

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status'),
    video: $('avatar-video'),
    placeholder: $('placeholder'),
    enableAudio: $('enable-audio'),
    join: $('join'),
    leave: $('leave'),
    chat: $('chat'),
    chatInput: $('chat-input'),
    send: $('send'),
    captions: $('captions'),
  };

  const STATUS_TEXT = {
    idle: 'Not connected',
    connecting: 'Connecting…',
    waiting: 'Waiting for avatar…',
    live: 'Live',
    error: 'Error',
  };
  const PLACEHOLDER_TEXT = {
    idle: 'Press Join to start a session',
    connecting: 'Connecting…',
    waiting: 'Waiting for the avatar to join…',
    error: 'Something went wrong',
  };

  // Read by tests and handy in the console; kept in sync with the session.
  const demo = (window.avatarDemo = { room: null, state: 'idle', avatarIdentity: null });

  // Remote tracks currently attached to the <video> element, by kind.
  const attached = { video: null, audio: null };
  // Caption <li> per transcription segment, plus the id of the stream that last wrote it.
  const segments = new Map();
  // True once room.connect() resolved; until then join() itself reports failures.
  let sessionConnected = false;

  const LK = window.LivekitClient;
  if (!LK) {
    setState('error', 'livekit-client failed to load (run `make setup`)');
    ui.join.disabled = true;
    return;
  }
  const { Room, RoomEvent, Track, ParticipantKind, ConnectionState } = LK;

  function setState(state, detail) {
    demo.state = state;
    ui.status.dataset.state = state;
    ui.status.textContent = detail ?? STATUS_TEXT[state];
    const connected = state === 'waiting' || state === 'live';
    ui.join.disabled = connected || state === 'connecting';
    ui.leave.disabled = !(connected || state === 'connecting');
    ui.chatInput.disabled = !connected;
    ui.send.disabled = !connected;
    ui.placeholder.hidden = state === 'live';
    ui.placeholder.textContent = state === 'error' && detail ? detail : PLACEHOLDER_TEXT[state] ?? '';
  }

  // --- picking the avatar ------------------------------------------------------------------

  // Same rule as LiveKit's own front ends: the agent is the kind-AGENT participant that does
  // not publish on anyone's behalf; an avatar worker names the agent in lk.publish_on_behalf
  // and, when present, is the one whose media we show.
  function findAgentAndAvatar(room) {
    const remotes = [...room.remoteParticipants.values()];
    const agent = remotes.find(
      (p) => p.kind === ParticipantKind.AGENT && !p.attributes[PUBLISH_ON_BEHALF],
    );
    const worker = agent
      ? remotes.find((p) => p.attributes[PUBLISH_ON_BEHALF] === agent.identity)
      : undefined;
    return { agent, worker };
  }

  function trackOf(participant, source) {
    return participant?.getTrackPublication(source)?.track ?? null;
  }

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
    const { agent, worker } = findAgentAndAvatar(room);
    demo.avatarIdentity = (worker ?? agent)?.identity ?? null;
    // Prefer the worker's tracks but fall back to the agent's, e.g. when only one of them
    // publishes audio.
    swapTrack('video', trackOf(worker, Track.Source.Camera) ?? trackOf(agent, Track.Source.Camera));
    swapTrack(
      'audio',
      trackOf(worker, Track.Source.Microphone) ?? trackOf(agent, Track.Source.Microphone),
    );
    if (room.state === ConnectionState.Connected) {
      setState(attached.video ? 'live' : 'waiting');
    }
  }

  function detachAll() {
    swapTrack('video', null);
    swapTrack('audio', null);
    ui.video.srcObject = null;
    ui.enableAudio.hidden = true;
  }

  // --- captions ----------------------------------------------------------------------------

  function addCaption(who, cssClass) {
    const li = document.createElement('li');
    if (cssClass) li.className = cssClass;
    const label = document.createElement('span');
    label.className = 'who';
    label.textContent = who;
    const text = document.createElement('span');
    li.append(label, text);
    ui.captions.append(li);
    while (ui.captions.children.length > MAX_CAPTIONS) {
      ui.captions.firstElementChild.remove();
    }
    return text;
  }

  function scrollCaptions() {
    ui.captions.scrollTop = ui.captions.scrollHeight;
  }

  async function onTranscription(reader, { identity }) {
    const room = demo.room;
    // Typed messages are already shown locally; skip any echo of our own text.
    if (!room || identity === room.localParticipant.identity) return;
    const info = reader.info;
    const segmentId = info.attributes?.[ATTR_SEGMENT_ID] ?? info.id;
    let entry = segments.get(segmentId);
    if (!entry || !entry.el.isConnected) {
      entry = { el: addCaption('Avatar'), streamId: null };
      segments.set(segmentId, entry);
    }
    // Senders either stream deltas in one stream per segment or resend the full text in a
    // new stream each time; a new stream for a known segment therefore replaces its text.
    if (entry.streamId !== info.id) {
      entry.streamId = info.id;
      entry.el.textContent = '';
    }
    try {
      for await (const chunk of reader) {
        if (entry.streamId === info.id) entry.el.textContent += chunk;
        scrollCaptions();
      }
    } catch (err) {
      console.warn('transcription stream failed', err);
    }
  }

  // --- session -----------------------------------------------------------------------------

  function wireRoom(room) {
    // Events from a room we already left must not touch the page.
    const ifCurrent = (fn) => (...args) => {
      if (demo.room === room) fn(...args);
    };
    room
      .on(RoomEvent.ParticipantConnected, ifCurrent(refreshAvatar))
      .on(RoomEvent.ParticipantDisconnected, ifCurrent(refreshAvatar))
      // The worker's lk.publish_on_behalf may arrive after it joined: re-pick then.
      .on(RoomEvent.ParticipantAttributesChanged, ifCurrent(refreshAvatar))
      .on(RoomEvent.TrackSubscribed, ifCurrent(refreshAvatar))
      .on(RoomEvent.TrackUnsubscribed, ifCurrent(refreshAvatar))
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
    room.registerTextStreamHandler(TOPIC_TRANSCRIPTION, onTranscription);
  }

  function endSession() {
    demo.room = null;
    sessionConnected = false;
    demo.avatarIdentity = null;
    detachAll();
    segments.clear();
  }

  async function join() {
    if (demo.room) return;
    const room = new Room();
    demo.room = room;
    wireRoom(room);
    // Browsers unlock audio only inside a user gesture, so this must run before any await.
    room.startAudio().catch(() => {});
    setState('connecting');
    try {
      const res = await fetch('/token', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: '{}',
      });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) {
        throw new Error(body?.error?.message ?? `token request failed (HTTP ${res.status})`);
      }
      await room.connect(body.url, body.token);
      if (demo.room !== room) return; // Leave was pressed while connecting
      sessionConnected = true;
      setState('waiting');
      refreshAvatar();
    } catch (err) {
      if (demo.room !== room) return;
      endSession();
      console.error('join failed', err);
      setState('error', `Could not join: ${err?.message ?? err}`);
      room.disconnect().catch(() => {});
    }
  }

  async function leave() {
    const room = demo.room;
    if (!room) return;
    endSession();
    setState('idle');
    await room.disconnect().catch(() => {});
  }

  async function sendChat(event) {
    event.preventDefault();
    const room = demo.room;
    const text = ui.chatInput.value.trim();
    if (!room || !text) return;
    ui.chatInput.value = '';
    addCaption('You', 'user').textContent = text;
    scrollCaptions();
    try {
      await room.localParticipant.sendText(text, { topic: TOPIC_CHAT });
    } catch (err) {
      console.error('sendText failed', err);
      addCaption('Error', 'error').textContent = `Could not send: ${err?.message ?? err}`;
    }
  }

  ui.join.addEventListener('click', join);
  ui.leave.addEventListener('click', leave);
  ui.chat.addEventListener('submit', sendChat);
  ui.enableAudio.addEventListener('click', () => {
    demo.room?.startAudio().catch(() => {});
  });
  window.addEventListener('pagehide', () => {
    demo.room?.disconnect();
  });

  setState('idle');
})();
