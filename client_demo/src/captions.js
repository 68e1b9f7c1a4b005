// Captions from the agent's `lk.transcription` text streams.

export const TOPIC_TRANSCRIPTION = 'lk.transcription';
const ATTR_SEGMENT_ID = 'lk.segment_id';
const MAX_CAPTIONS = 50;

export class Captions {
  constructor(list) {
    this.list = list;
    // Caption <li> per transcription segment, plus the id of the stream that last wrote it.
    this.segments = new Map();
  }

  add(who, cssClass) {
    const li = document.createElement('li');
    if (cssClass) li.className = cssClass;
    const label = document.createElement('span');
    label.className = 'who';
    label.textContent = who;
    const text = document.createElement('span');
    text.className = 'text';
    li.append(label, text);
    this.list.append(li);
    while (this.list.children.length > MAX_CAPTIONS) this.list.firstElementChild.remove();
    this.list.dataset.empty = 'false';
    return text;
  }

  scroll() {
    this.list.scrollTop = this.list.scrollHeight;
  }

  clear() {
    this.segments.clear();
  }

  // A TextStreamHandler. The agent sends the avatar's speech under its own identity and the
  // user's transcribed speech under the user's identity.
  async onStream(reader, { identity }, localIdentity) {
    const info = reader.info;
    const mine = identity === localIdentity;
    const segmentId = info.attributes?.[ATTR_SEGMENT_ID] ?? info.id;
    let entry = this.segments.get(segmentId);
    if (!entry || !entry.el.isConnected) {
      entry = { el: mine ? this.add('You', 'user') : this.add('Avatar'), streamId: null };
      this.segments.set(segmentId, entry);
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
        this.scroll();
      }
    } catch (err) {
      console.warn('transcription stream failed', err);
    }
  }
}
